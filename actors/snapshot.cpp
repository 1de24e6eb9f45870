#include "actors/snapshot.hpp"

#include <algorithm>

namespace vmitap {

bool breakpoint_table::manages(drv::view_id view) const {
  return std::find(views.begin(), views.end(), view) != views.end();
}

void breakpoints_at(const page_breakpoints& page, uint64_t offset,
                    std::vector<breakpoint_ptr>& hits) {
  auto less = [](const auto& entry, uint64_t off) { return entry.first < off; };
  for (auto i = std::lower_bound(page.at.begin(), page.at.end(), offset, less);
       i != page.at.end() && i->first == offset; ++i)
    hits.push_back(i->second);
}

snapshot_cell::snapshot_cell() : current_(std::make_shared<breakpoint_table>()) {}

void snapshot_cell::publish(table_ptr table) {
  std::lock_guard g{mutex_};
  auto version = table->version;
  current_ = std::move(table);
  version_.store(version, std::memory_order_release);
}

table_ptr snapshot_cell::load() const {
  std::lock_guard g{mutex_};
  return current_;
}

table_builder::table_builder(std::vector<drv::view_id> views) : views_(std::move(views)) {}

void table_builder::set_page(drv::view_id view, drv::gfn_t gfn, std::vector<breakpoint_ptr> bps) {
  auto key = page_key(view, gfn);
  auto s = breakpoint_table::shard_of(key);
  dirty_[s] = true;
  if (auto old = pages_[s].find(key); old != pages_[s].end()) {
    breakpoints_per_view_[view] -= uint32_t(old->second.at.size());
    --pages_per_view_[view];
    if (bps.empty())
      pages_[s].erase(old);
  }
  if (bps.empty())
    return;
  breakpoints_per_view_[view] += uint32_t(bps.size());
  ++pages_per_view_[view];
  auto& page = pages_[s][key];
  page.view = view;
  page.gfn = gfn;
  page.at.clear();
  page.at.reserve(bps.size());
  for (auto& bp : bps)
    page.at.emplace_back(uint16_t(bp->spec.pa & drv::page_mask), std::move(bp));
  std::stable_sort(page.at.begin(), page.at.end(),
                   [](auto& a, auto& b) { return a.first < b.first; });
}

table_ptr table_builder::build() {
  auto t = std::make_shared<breakpoint_table>();
  t->version = last_ ? last_->version + 1 : 1;
  t->views = views_;
  for (size_t s = 0; s < breakpoint_table::shard_count; ++s) {
    if (!dirty_[s] && last_) {
      t->shards[s] = last_->shards[s];
    } else if (!pages_[s].empty()) {
      auto shard = std::make_shared<table_shard>();
      shard->pages = pages_[s];
      t->shards[s] = std::move(shard);
    }
    dirty_[s] = false;
  }
  t->breakpoints_per_view = breakpoints_per_view_;
  t->pages_per_view = pages_per_view_;
  last_ = t;
  return t;
}

}  // namespace vmitap
