#pragma once

// Every actor role's typed interface, in one place. A test double implements the same
// interface and the compiler checks that it matches.

#include "actors/messages.hpp"

#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

namespace vmitap {

/// Receives hit records; writes them somewhere.
using sink_actor = caf::typed_actor<
  /// One hit; never blocks the sender (the sender bounds what it has in flight).
  caf::reacts_to<hit_atom, hit_record>,
  /// Answered once every earlier record is written out.
  caf::replies_to<flush_atom>::with<ok_atom>>;

/// One per VCPU event stream: decides hit / page neighbour / stale / spurious / malformed,
/// steps the VCPU over the trapped instruction, and answers every request exactly once.
using vcpu_actor = caf::typed_actor<
  /// A request from the hypervisor for this VCPU, and when the driver saw it
  /// (steady-clock nanoseconds).
  caf::reacts_to<event_atom, drv::event, int64_t>,
  /// The registry's newest breakpoint table.
  caf::reacts_to<snapshot_atom, table_ptr>,
  /// Answered after every event queued before it was answered; reports the counts.
  caf::replies_to<drain_atom>::with<vcpu_stats>>;

/// The only writer of access rights and views for its domain. Coalesces the changes that
/// arrive while a call is in flight into one batched call per view.
using ept_controller_actor = caf::typed_actor<
  /// Creates a view with the given default access.
  caf::replies_to<create_atom, drv::page_access>::with<drv::view_id>,
  /// Removes Execute from the page, remembering its previous access.
  caf::replies_to<monitor_atom, drv::view_id, drv::gfn_t>::with<ok_atom>,
  /// Gives the page back exactly the access it had before `monitor`.
  caf::replies_to<restore_atom, drv::view_id, drv::gfn_t>::with<ok_atom>,
  /// Restores every page still monitored, moves all VCPUs to view 0, destroys the views.
  caf::replies_to<teardown_atom>::with<ok_atom>,
  /// Access-change calls made, pages changed, failed calls.
  caf::replies_to<status_atom>::with<uint64_t, uint64_t, uint64_t>>;

/// The one authority on a domain's breakpoints: refcounted page monitoring, versioned
/// snapshots pushed to the VCPU actors before any page's access changes.
using breakpoint_registry_actor = caf::typed_actor<
  /// Adds a breakpoint; answers its id once its page is monitored.
  caf::replies_to<add_atom, breakpoint_spec>::with<uint64_t>,
  /// Removes one; answers once its page is restored (if it was the page's last).
  caf::replies_to<remove_atom, uint64_t>::with<ok_atom>,
  /// Removes all breakpoints; answers once every page is restored.
  caf::replies_to<clear_atom>::with<ok_atom>,
  /// Every breakpoint with its hit count.
  caf::replies_to<list_atom>::with<std::vector<breakpoint_ptr>>>;

/// One per monitored domain: spawns and links the actors above, attaches and detaches.
using domain_supervisor_actor = caf::typed_actor<
  /// Pauses, sets up views and breakpoints, starts events, resumes.
  caf::replies_to<attach_atom>::with<ok_atom>,
  /// Ordered teardown: stop events, drain, remove breakpoints, restore, destroy views, detach.
  caf::replies_to<detach_atom>::with<domain_report>,
  caf::replies_to<status_atom>::with<domain_report>,
  caf::replies_to<registry_atom>::with<breakpoint_registry_actor>,
  /// Applies a plan that differs only in breakpoints: removes, adds, replaces by name.
  caf::replies_to<update_atom, domain_plan>::with<ok_atom>,
  /// The domain died: clean up without touching it.
  caf::reacts_to<died_atom>,
  /// A request whose VCPU id is out of range: counted and answered.
  caf::reacts_to<orphan_atom, drv::event>>;

/// Owns the domains: attaches the ones the plan selects as they start, detaches on stop.
using engine_actor = caf::typed_actor<
  caf::reacts_to<started_atom, drv::domain_info>,
  caf::reacts_to<stopped_atom, drv::domain_info>,
  caf::replies_to<status_atom>::with<std::vector<domain_report>>,
  /// Applies a new, validated config: breakpoints changed in place, domains attached,
  /// detached or (new views or step mode) re-attached.
  caf::replies_to<reload_atom, engine_config_ptr>::with<ok_atom>,
  /// Detaches every domain; answers with their final reports.
  caf::replies_to<stop_atom>::with<std::vector<domain_report>>>;

}  // namespace vmitap
