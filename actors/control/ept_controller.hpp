#pragma once

// The only writer of access rights and views for one domain. It remembers the access each
// monitored page had and restores exactly that; it batches: one read and one write call per
// view for a whole batch of page changes, and after a failed write it reads back what the
// guest really has, so the registry and the guest agree.

#include "actors/control/control.hpp"
#include "actors/control/teardown_watch.hpp"
#include "actors/model/monitored_domain.hpp"

#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <map>

namespace vmitap {

struct ept_controller_config {
  std::shared_ptr<drv::domain_session> session;
  domain_ptr domain;         ///< for its counters
  teardown_watch_ptr watch;  ///< the pages it has changed, for a stuck teardown's report
};

struct ept_controller_state {
  ept_controller_state() = default;  // not an aggregate: CAF would build it from `self`
  static inline const char* name = "vmitap.ept_controller";

  using page_key = std::pair<drv::view_id, drv::gfn_t>;

  ept_controller_config cfg;
  /// Pages this controller may have changed, with the access they had before: restored at
  /// teardown. One whose write failed and could not be read back is here too (it may have
  /// changed); every change of a page is written from this access, whatever the page has.
  std::map<page_key, drv::page_access> previous;
  std::vector<drv::view_id> views;  // created by this controller

  change_results apply(const page_changes& changes);
  caf::error teardown();

private:
  enum class outcome : uint8_t { applied, unchanged, unknown };
  /// One batched write, measured and counted; on failure, reads back which entries hold.
  /// Returns, per change, whether the guest now has its value (unknown: the read-back
  /// failed too; `err` then says so).
  std::vector<outcome> write(drv::view_id view, const std::vector<drv::access_change>& batch,
                             caf::error& err);
  /// Tells the teardown watch that `key` is now changed, or restored.
  void watched(const page_key& key, bool changed);
};

ept_controller_actor::behavior_type ept_controller(
  ept_controller_actor::stateful_pointer<ept_controller_state> self, ept_controller_config cfg);

}  // namespace vmitap
