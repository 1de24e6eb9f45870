#pragma once

// The only writer of access rights and views for one domain. It remembers the access each
// monitored page had and restores exactly that; it batches: one read and one write call per
// view for a whole batch of page changes, and after a failed write it reads back what the
// guest really has, so the registry and the guest agree.

#include "actors/interfaces.hpp"
#include "actors/monitored_domain.hpp"

#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <map>

namespace vmitap {

struct ept_controller_config {
  std::shared_ptr<drv::domain_session> session;
  domain_ptr domain;  ///< for its counters
};

struct ept_controller_state {
  ept_controller_state() = default;  // not an aggregate: CAF would build it from `self`
  static inline const char* name = "vmitap.ept_controller";

  ept_controller_config cfg;
  std::map<std::pair<drv::view_id, drv::gfn_t>, drv::page_access> previous;  // monitored pages
  std::vector<drv::view_id> views;  // created by this controller

  change_results apply(const page_changes& changes);
  caf::error teardown();

private:
  /// One batched write, measured and counted; on failure, reads back which entries hold.
  /// Returns, per change, whether the guest now has its value.
  std::vector<bool> write(drv::view_id view, const std::vector<drv::access_change>& batch,
                          caf::error& err);
};

ept_controller_actor::behavior_type
ept_controller(ept_controller_actor::stateful_pointer<ept_controller_state> self,
               ept_controller_config cfg);

}  // namespace vmitap
