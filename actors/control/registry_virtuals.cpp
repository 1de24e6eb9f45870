// A registry's virtual breakpoints: placing them by a walk, the page tables watched for
// them, and the walk again after a watched table is written (breakpoint_registry.hpp).

#include "actors/control/registry_steps.hpp"
#include "drivers/error.hpp"

#include <spdlog/spdlog.h>

namespace vmitap::registry {

/// Touches page table `gfn` in every view; `req` (if any) waits until each has settled,
/// for the pending breakpoints in `pending_bps`.
void touch_table(state& st, drv::gfn_t gfn, const std::shared_ptr<state::pending>& req,
                 const std::vector<breakpoint_ptr>& pending_bps) {
  for (auto& [name, view] : st.cfg.views) {
    auto& p = touch(st, view, gfn);
    if (!req)
      continue;
    ++req->pages_left;
    // Each view's waiter judges the breakpoints: the first view that cannot watch fails them.
    p.waiters.push_back({req, state::wait_kind::settle, pending_bps});
  }
}

/// Counts a watch of page table `gfn`; true if it is new (its pages must be touched).
bool watch(state& st, drv::gfn_t gfn) {
  return ++st.watches[gfn] == 1;
}

/// Drops a watch of `gfn`; true if it was the last (its pages must be touched).
bool unwatch(state& st, drv::gfn_t gfn) {
  auto it = st.watches.find(gfn);
  if (it == st.watches.end() || --it->second > 0)
    return false;
  st.watches.erase(it);
  return true;
}

void publish_watches(state& st) {
  std::vector<drv::gfn_t> gfns;
  gfns.reserve(st.watches.size());
  for (auto& [gfn, count] : st.watches)
    gfns.push_back(gfn);
  st.builder->watch(std::move(gfns));
}

/// Where a virtual target is now, or why it cannot be placed. `walker` is made at the first
/// walk and kept for the rest of the message: one pause of its cache.
virtual_place place(state& st, std::unique_ptr<drv::page_walker>& walker, uint64_t va) {
  if (!st.cfg.session || st.cr3 == 0) {
    virtual_place at;
    at.error = make_error(ec::kernel_not_found, "no kernel page tables to walk");
    return at;
  }
  if (!walker)
    walker = std::make_unique<drv::page_walker>(*st.cfg.session);
  auto at = place_virtual(*walker, st.cr3, va);
  if (!at.error && drv::gfn_of(at.pa) > st.cfg.max_gfn)
    at.error = make_error(ec::gfn_out_of_range, "mapped beyond guest memory");
  return at;
}

/// Stops following a virtual breakpoint (removed, or the registry cleared).
void drop_virtual(state& st, const breakpoint* bp) {
  auto v = st.virtuals.find(bp);
  if (v == st.virtuals.end())
    return;
  if (v->second.at.watched && unwatch(st, v->second.at.table)) {
    publish_watches(st);
    touch_table(st, v->second.at.table, nullptr, {});
  }
  st.virtuals.erase(v);
}

void drop_failed_virtuals(state& st) {
  for (auto& bp : std::exchange(st.failed_virtuals, {}))
    drop_virtual(st, bp.get());
  publish_out_of_table(st);
}

/// A VCPU wrote page table `w.gfn`: every virtual breakpoint it decides is walked again, and
/// the VCPU goes on once what moved is armed or disarmed.
void walk(state_ptr self, const table_write& w) {
  auto& st = self->state;
  auto req = std::make_shared<state::pending>();
  req->promise = std::function<void()>([w] {
    if (auto path = w.path.lock())
      path->decided(w.vcpu, w.token, std::nullopt);
  });
  if (w.kernel_mode && w.cr3 != 0)
    st.cr3 = w.cr3;  // the writer's tables are live; the ones seen before may not be
  std::set<uint64_t> moved_pages;
  std::set<drv::gfn_t> moved_tables;
  std::vector<drv::gfn_t> new_tables;  // read before they were watched: walked again after
  std::unique_ptr<drv::page_walker> walker;
  for (auto& [raw, v] : st.virtuals) {
    if (!v.at.watched || v.at.table != w.gfn)
      continue;
    auto at = place(st, walker, v.va);
    if (at.error) {
      // Not a table vmitap can read now: pending, watched where it was.
      spdlog::warn("domain {}: breakpoint {}: {}", st.cfg.domain->info().name, v.bp->name,
                   render(at.error));
      at = {0, v.at.table, true, {}};
    }
    if (at.watched != v.at.watched || at.table != v.at.table) {
      if (unwatch(st, v.at.table))
        moved_tables.insert(v.at.table);
      if (at.watched && watch(st, at.table)) {
        moved_tables.insert(at.table);
        new_tables.push_back(at.table);
      }
    }
    if (at.pa != v.at.pa) {
      const auto& bp = v.bp;
      bool suppressed = st.suppressed.contains(bp.get());
      if (!suppressed && st.builder->remove(bp.get()))
        moved_pages.insert(page_key(bp->view, drv::gfn_of(bp->pa())));
      if (at.pa != 0) {
        bp->move_to(at.pa);  // out of every table being built: no reader races the move
        if (!suppressed) {
          st.builder->add(bp);
          moved_pages.insert(page_key(bp->view, drv::gfn_of(at.pa)));
        }
      }
      bp->set_pending(at.pa == 0);
      spdlog::debug("domain {}: breakpoint {} {}", st.cfg.domain->info().name, bp->name,
                    at.pa ? fmt::format("armed at {:#x}: its page is mapped", at.pa)
                          : std::string("pending: its page went"));
    }
    v.at = at;
  }
  if (!moved_tables.empty())
    publish_watches(st);
  for (auto gfn : moved_tables)
    touch_table(st, gfn, req, {});
  for (auto key : moved_pages) {
    auto& p = touch(st, drv::view_id(key >> 52), key & ((uint64_t{1} << 52) - 1));
    ++req->pages_left;
    p.waiters.push_back({req, state::wait_kind::settle, {}});
  }
  if (!new_tables.empty())
    req->then = [self, new_tables] {
      for (auto gfn : new_tables)
        self->send(self, walk_atom_v, table_write{gfn, 0, false, 0, 0, {}});
    };
  bool delegated = req->pages_left > 0;  // released when its pages settle
  // Listed out of the table before it leaves and after it comes back: never in neither.
  publish_out_of_table(st);
  send_batch(self);  // publishes first
  publish_out_of_table(st);
  if (!delegated) {
    finish(*req);
    if (req->then)
      req->then();
  }
}

}  // namespace vmitap::registry
