#pragma once

// The breakpoint table the hot path reads: immutable, versioned, published by the registry
// before any page's access changes, so no VCPU can trap on a page it does not know yet.
// The table is split into shards, each a sorted array of (page, offset, breakpoint): a new
// version copies only the shards a batch touched and shares the rest with the previous one.

#include "actors/model/breakpoint.hpp"

#include <array>
#include <mutex>
#include <span>

namespace vmitap {

constexpr uint64_t page_key(drv::view_id view, drv::gfn_t gfn) {
  return (uint64_t{view} << 52) | gfn;
}

struct table_entry {
  uint64_t page = 0;  ///< page_key(view, gfn)
  uint16_t offset = 0;
  breakpoint_ptr bp;
  bool operator<(const table_entry& o) const {
    return page != o.page ? page < o.page : offset < o.offset;
  }
};

/// The breakpoints of one page, sorted by their offset in it (empty: not monitored).
using page_entries = std::span<const table_entry>;

struct table_shard {
  std::vector<table_entry> entries;  ///< sorted
  bool sorted = true;                ///< the builder's working copy may be appended to
};

struct breakpoint_table {
  static constexpr size_t shard_count = 64;
  static size_t shard_of(uint64_t page) { return (page * 0x9e3779b97f4a7c15ULL) >> 58; }

  uint64_t version = 0;
  std::vector<drv::view_id> views;  ///< the views vmitap manages (events there are ours)
  std::array<std::shared_ptr<const table_shard>, shard_count> shards;
  std::array<uint32_t, drv::max_views> breakpoints_per_view{};
  std::array<uint32_t, drv::max_views> pages_per_view{};
  /// Page-table pages whose entries decide where virtual breakpoints are (sorted; write
  /// access removed in every view vmitap manages). None: no virtual breakpoint.
  std::shared_ptr<const std::vector<drv::gfn_t>> watched;

  page_entries find(drv::view_id view, drv::gfn_t gfn) const;
  bool manages(drv::view_id view) const;
  bool watching(drv::gfn_t gfn) const;
  /// Every breakpoint, in no particular order.
  template <class F>
  void for_each(F&& f) const {
    for (auto& s : shards)
      if (s)
        for (auto& e : s->entries)
          f(e.bp);
  }
};

using table_ptr = std::shared_ptr<const breakpoint_table>;

/// The entries of `page` in a sorted shard.
page_entries entries_of(const std::vector<table_entry>& sorted, uint64_t page);
/// Appends to `hits` the breakpoints of a page at exactly `offset` (a binary search).
void breakpoints_at(page_entries page, uint64_t offset, std::vector<breakpoint_ptr>& hits);

/// Where the registry publishes and the hot path reads the newest table. A reader checks
/// the version (one load) and takes the lock only when it changed.
class snapshot_cell {
public:
  snapshot_cell();
  void publish(table_ptr table);
  uint64_t version() const { return version_.load(std::memory_order_acquire); }
  table_ptr load() const;

private:
  mutable std::mutex mutex_;
  table_ptr current_;
  std::atomic<uint64_t> version_{0};
};

/// The registry's side: the one copy of every page's breakpoints is the published table's;
/// a batch copies each shard it touches once (copy on write) and `build` publishes them.
class table_builder {
public:
  explicit table_builder(std::vector<drv::view_id> views);

  /// The page's breakpoints as the next table will have them (empty: none).
  page_entries find(drv::view_id view, drv::gfn_t gfn);
  bool contains(const breakpoint* bp);
  void add(breakpoint_ptr bp);
  /// False if it was not there.
  bool remove(const breakpoint* bp);
  /// Every page goes.
  void clear();
  /// The page-table pages the next table watches (sorted).
  void watch(std::vector<drv::gfn_t> sorted);
  /// True if something changed since the last build.
  bool changed() const { return changed_; }
  /// A new version: the shards this batch changed, the others shared with the last one.
  table_ptr build();
  /// The table as the next build will have it.
  template <class F>
  void for_each(F&& f) {
    for (size_t s = 0; s < breakpoint_table::shard_count; ++s)
      if (auto* shard = current(s))
        for (auto& e : shard->entries)
          f(e.bp);
  }

private:
  table_shard& working(size_t shard);
  const table_shard* current(size_t shard);

  std::vector<drv::view_id> views_;
  table_ptr last_;
  std::array<std::shared_ptr<table_shard>, breakpoint_table::shard_count> working_;
  std::array<uint32_t, drv::max_views> breakpoints_per_view_{};
  std::shared_ptr<const std::vector<drv::gfn_t>> watched_;
  bool changed_ = false;
};

}  // namespace vmitap
