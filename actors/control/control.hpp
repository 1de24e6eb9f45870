#pragma once

// The control room, at the top of actors/: what owns a domain session and changes it. The
// supervisor (attach, plan updates, the ordered teardown, teardown_watch), the breakpoint
// registry (the one authority on a domain's breakpoints and their pages) and the controller
// (the only writer of access rights and views). It may use every room below: model, records,
// handlers and hotpath. These are its actors' typed interfaces; a test double implements the
// same interface and the compiler checks that it matches.

#include "actors/hotpath/hotpath.hpp"
#include "actors/model/plan.hpp"
#include "actors/model/report.hpp"

#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

namespace vmitap {

/// One page's access change, as the registry asks the controller for it.
struct page_change {
  drv::view_id view = 0;
  drv::gfn_t gfn = 0;
  /// The rights the page must lack (Execute for breakpoints, Write for a watched page
  /// table); none: restore the access it had before vmitap changed it.
  drv::page_access deny = drv::page_access::x;
};

using page_changes = std::vector<page_change>;
/// One entry per change, in order: none, or why that page is not as asked.
using change_results = std::vector<caf::error>;

/// The only writer of access rights and views for its domain.
using ept_controller_actor = caf::typed_actor<
  /// Creates a view with the given default access.
  caf::replies_to<create_atom, drv::page_access>::with<drv::view_id>,
  /// Applies a batch: one batched read of what monitored pages had, one batched write per
  /// view; after a failed write, reads back what was applied.
  caf::replies_to<apply_atom, page_changes>::with<change_results>,
  /// Restores every page still monitored, moves all VCPUs to view 0, destroys the views.
  caf::replies_to<teardown_atom>::with<ok_atom>>;

/// The one authority on a domain's breakpoints: refcounted page monitoring, a versioned
/// table published before any page's access changes.
using breakpoint_registry_actor = caf::typed_actor<
  /// Adds breakpoints; answers once every page they need is monitored, with what failed.
  caf::replies_to<add_atom, std::vector<breakpoint_def>, armed_by>::with<batch_result>,
  /// Removes breakpoints by name; answers once every page they leave empty is restored.
  caf::replies_to<remove_atom, std::vector<std::string>>::with<batch_result>,
  /// Removes all breakpoints; answers once every page is restored.
  caf::replies_to<clear_atom>::with<ok_atom>,
  /// Every breakpoint with its hit count (suppressed ones included).
  caf::replies_to<list_atom>::with<std::vector<breakpoint_ptr>>,
  /// From the hot path: the breakpoint went over its rate limit. Disarms it for its
  /// cool-down (its name stays taken, its hits count on), then re-arms the same breakpoint.
  caf::reacts_to<suppress_atom, breakpoint_ptr>,
  /// From the hot path: a watched page table was written; walks again, arms or disarms what
  /// moved, then lets the held VCPU go.
  caf::reacts_to<walk_atom, table_write>,
  /// Virtual breakpoints are walked through these tables (a kernel-mode cr3) from now on.
  caf::reacts_to<tables_atom, uint64_t>>;

/// One per monitored domain session: attaches, arms, detaches, in order.
using domain_supervisor_actor = caf::typed_actor<
  /// Pauses, sets up views and breakpoints, starts events, resumes.
  caf::replies_to<attach_atom>::with<ok_atom>,
  /// Ordered teardown: pause, final drain, remove breakpoints, restore, destroy views, detach.
  caf::replies_to<detach_atom>::with<domain_report>,
  /// Counts and breakpoints now (every request raised before it is counted).
  caf::replies_to<status_atom>::with<domain_report>,
  /// Applies a plan that differs only in breakpoints: removes, adds, replaces by name.
  caf::replies_to<update_atom, plan_ptr>::with<ok_atom>,
  /// The domain died: clean up without touching it.
  caf::reacts_to<died_atom>>;

}  // namespace vmitap
