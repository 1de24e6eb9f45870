#include "actors/model/snapshot.hpp"

#include <algorithm>

namespace vmitap {

namespace {

uint64_t page_of(const table_entry& e) {
  return e.page;
}
uint64_t page_of(uint64_t page) {
  return page;
}

}  // namespace

page_entries entries_of(const std::vector<table_entry>& sorted, uint64_t page) {
  auto [first, last] =
    std::equal_range(sorted.begin(), sorted.end(), page,
                     [](const auto& a, const auto& b) { return page_of(a) < page_of(b); });
  return {first, last};
}

page_entries breakpoint_table::find(drv::view_id view, drv::gfn_t gfn) const {
  auto page = page_key(view, gfn);
  auto& s = shards[shard_of(page)];
  return s ? entries_of(s->entries, page) : page_entries{};
}

bool breakpoint_table::manages(drv::view_id view) const {
  return std::find(views.begin(), views.end(), view) != views.end();
}

bool breakpoint_table::watching(drv::gfn_t gfn) const {
  return watched && std::binary_search(watched->begin(), watched->end(), gfn);
}

void breakpoints_at(page_entries page, uint64_t offset, std::vector<breakpoint_ptr>& hits) {
  auto i = std::lower_bound(page.begin(), page.end(), offset,
                            [](const table_entry& e, uint64_t off) { return e.offset < off; });
  for (; i != page.end() && i->offset == offset; ++i)
    hits.push_back(i->bp);
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

table_builder::table_builder(std::vector<drv::view_id> views) :
  views_(std::move(views)), last_(std::make_shared<breakpoint_table>()) {}

table_shard& table_builder::working(size_t shard) {
  auto& w = working_[shard];
  if (!w)
    w = last_->shards[shard] ? std::make_shared<table_shard>(*last_->shards[shard])
                             : std::make_shared<table_shard>();
  changed_ = true;
  return *w;
}

const table_shard* table_builder::current(size_t shard) {
  if (auto& w = working_[shard]) {
    if (!w->sorted) {  // appended to since: sort once, when first read
      std::stable_sort(w->entries.begin(), w->entries.end());
      w->sorted = true;
    }
    return w.get();
  }
  return last_->shards[shard].get();
}

page_entries table_builder::find(drv::view_id view, drv::gfn_t gfn) {
  auto page = page_key(view, gfn);
  auto* s = current(breakpoint_table::shard_of(page));
  return s ? entries_of(s->entries, page) : page_entries{};
}

bool table_builder::contains(const breakpoint* bp) {
  auto page = find(bp->view, drv::gfn_of(bp->pa()));
  return std::any_of(page.begin(), page.end(), [&](auto& e) { return e.bp.get() == bp; });
}

void table_builder::add(breakpoint_ptr bp) {
  auto page = page_key(bp->view, drv::gfn_of(bp->pa()));
  auto& w = working(breakpoint_table::shard_of(page));
  ++breakpoints_per_view_[bp->view];
  table_entry e{page, uint16_t(bp->pa() & drv::page_mask), std::move(bp)};
  if (!w.entries.empty() && e < w.entries.back())
    w.sorted = false;  // sorted once, when the shard is next read
  w.entries.push_back(std::move(e));
}

bool table_builder::remove(const breakpoint* bp) {
  auto shard = breakpoint_table::shard_of(page_key(bp->view, drv::gfn_of(bp->pa())));
  if (!contains(bp))
    return false;
  std::erase_if(working(shard).entries, [&](auto& e) { return e.bp.get() == bp; });
  --breakpoints_per_view_[bp->view];
  return true;
}

void table_builder::clear() {
  for (auto& w : working_)
    w = std::make_shared<table_shard>();
  breakpoints_per_view_ = {};
  changed_ = true;
}

void table_builder::watch(std::vector<drv::gfn_t> sorted) {
  watched_ =
    sorted.empty() ? nullptr : std::make_shared<const std::vector<drv::gfn_t>>(std::move(sorted));
  changed_ = true;
}

table_ptr table_builder::build() {
  auto t = std::make_shared<breakpoint_table>();
  t->version = last_->version + 1;
  t->views = views_;
  t->watched = watched_;
  for (size_t s = 0; s < breakpoint_table::shard_count; ++s) {
    current(s);  // sorted before it is shared
    if (working_[s]) {
      auto& entries = working_[s]->entries;
      entries.shrink_to_fit();
      t->shards[s] = entries.empty() ? nullptr : std::move(working_[s]);
    } else {
      t->shards[s] = last_->shards[s];
    }
    working_[s].reset();
    if (auto& shard = t->shards[s])
      for (size_t i = 0; i < shard->entries.size(); ++i)
        if (i == 0 || shard->entries[i].page != shard->entries[i - 1].page)
          ++t->pages_per_view[shard->entries[i].page >> 52];
  }
  t->breakpoints_per_view = breakpoints_per_view_;
  last_ = t;
  changed_ = false;
  return t;
}

}  // namespace vmitap
