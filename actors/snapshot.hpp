#pragma once

// The breakpoint table the hot path reads: immutable, versioned, published by the registry
// before any page's access changes, so no VCPU can trap on a page it does not know yet.
// The table is split into shards; a new version copies only the shards a batch touched and
// shares the rest with the previous one.

#include "actors/messages.hpp"

#include <array>
#include <mutex>
#include <unordered_map>

namespace vmitap {

constexpr uint64_t page_key(drv::view_id view, drv::gfn_t gfn) {
  return (uint64_t{view} << 52) | gfn;
}

/// The breakpoints on one monitored page, sorted by their offset in the page.
struct page_breakpoints {
  drv::view_id view = 0;
  drv::gfn_t gfn = 0;
  std::vector<std::pair<uint16_t, breakpoint_ptr>> at;
};

struct table_shard {
  std::unordered_map<uint64_t, page_breakpoints> pages;  ///< page_key → its breakpoints
};

struct breakpoint_table {
  static constexpr size_t shard_count = 64;
  static size_t shard_of(uint64_t key) { return (key * 0x9e3779b97f4a7c15ULL) >> 58; }

  uint64_t version = 0;
  std::vector<drv::view_id> views;  ///< the views vmitap manages (events there are ours)
  std::array<std::shared_ptr<const table_shard>, shard_count> shards;
  std::array<uint32_t, drv::max_views> breakpoints_per_view{};
  std::array<uint32_t, drv::max_views> pages_per_view{};

  const page_breakpoints* find(drv::view_id view, drv::gfn_t gfn) const {
    auto key = page_key(view, gfn);
    auto& s = shards[shard_of(key)];
    if (!s)
      return nullptr;
    auto i = s->pages.find(key);
    return i == s->pages.end() ? nullptr : &i->second;
  }
  bool manages(drv::view_id view) const;
  /// Every breakpoint, in no particular order.
  template <class F>
  void for_each(F&& f) const {
    for (auto& s : shards)
      if (s)
        for (auto& [key, page] : s->pages)
          for (auto& [offset, bp] : page.at)
            f(bp);
  }
};

using table_ptr = std::shared_ptr<const breakpoint_table>;

/// Appends to `hits` the breakpoints of `page` at exactly `offset` (a binary search).
void breakpoints_at(const page_breakpoints& page, uint64_t offset,
                    std::vector<breakpoint_ptr>& hits);

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

/// The registry's side: keeps the pages per shard and builds a new table from the shards a
/// batch changed.
class table_builder {
public:
  explicit table_builder(std::vector<drv::view_id> views);

  /// Sets the breakpoints of one page (empty: the page leaves the table).
  void set_page(drv::view_id view, drv::gfn_t gfn, std::vector<breakpoint_ptr> bps);
  /// A new version with every changed shard rebuilt and the others shared.
  table_ptr build();

private:
  std::vector<drv::view_id> views_;
  std::array<std::unordered_map<uint64_t, page_breakpoints>, breakpoint_table::shard_count> pages_;
  std::array<bool, breakpoint_table::shard_count> dirty_{};
  std::array<uint32_t, drv::max_views> breakpoints_per_view_{};
  std::array<uint32_t, drv::max_views> pages_per_view_{};
  table_ptr last_;
};

}  // namespace vmitap
