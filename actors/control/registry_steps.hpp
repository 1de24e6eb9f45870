#pragma once

// The registry's steps that its breakpoints and its virtual targets share
// (breakpoint_registry.cpp, registry_virtuals.cpp). Not an interface: only the registry
// includes it.

#include "actors/control/breakpoint_registry.hpp"

namespace vmitap::registry {

using state_ptr = breakpoint_registry_impl::stateful_pointer<breakpoint_registry_state>;
using state = breakpoint_registry_state;
using drv::page_access;

inline bool denies(page_access denied, page_access right) {
  return allows(denied, right);
}

/// Answers a request whose pages have all settled.
void finish(state::pending& req);
/// Publishes the table if the builder changed it.
void publish(state& st);
/// What the exporter lists beside the table: suppressed and pending breakpoints, and the
/// counts of virtual ones.
void publish_out_of_table(state& st);
/// Sends every page whose wanted and confirmed states differ, as one batch.
void send_batch(state_ptr self);
/// Touches a page: it must be settled again, and whoever waits on it is told when it is.
state::page& touch(state& st, drv::view_id view, drv::gfn_t gfn);

/// Touches page table `gfn` in every view; `req` (if any) waits until each has settled,
/// for the pending breakpoints in `pending_bps`.
void touch_table(state& st, drv::gfn_t gfn, const std::shared_ptr<state::pending>& req,
                 const std::vector<breakpoint_ptr>& pending_bps);
/// Counts a watch of page table `gfn`; true if it is new (its pages must be touched).
bool watch(state& st, drv::gfn_t gfn);
/// Drops a watch of `gfn`; true if it was the last (its pages must be touched).
bool unwatch(state& st, drv::gfn_t gfn);
/// The watched tables into the next table.
void publish_watches(state& st);
/// Where a virtual target is now, or why it cannot be placed. `walker` is made at the first
/// walk and kept for the rest of the message: one pause of its cache.
virtual_place place(state& st, std::unique_ptr<drv::page_walker>& walker, uint64_t va);
/// Stops following a virtual breakpoint (removed, or the registry cleared).
void drop_virtual(state& st, const breakpoint* bp);
/// Drops the virtual breakpoints that failed to arm or to be watched, with their watches.
void drop_failed_virtuals(state& st);
/// A VCPU wrote page table `w.gfn`: every virtual breakpoint it decides is walked again, and
/// the VCPU goes on once what moved is armed or disarmed.
void walk(state_ptr self, const table_write& w);

}  // namespace vmitap::registry
