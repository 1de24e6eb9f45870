#pragma once

#include "actors/interfaces.hpp"
#include "engine/metrics.hpp"

#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <caf/typed_response_promise.hpp>

#include <map>

namespace vmitap {

/// The controller's full behaviour: its public interface plus the flush it sends itself.
using ept_controller_impl = ept_controller_actor::extend<caf::reacts_to<flush_atom>>;

struct ept_controller_state {
  ept_controller_state() = default;  // not an aggregate: CAF would build it from `self`
  static inline const char* name = "vmitap.ept_controller";

  struct change {
    drv::view_id view;
    drv::gfn_t gfn;
    bool monitor;  // false: restore
    caf::typed_response_promise<ok_atom> promise;
  };

  std::shared_ptr<drv::domain_session> session;
  std::vector<change> pending;
  bool flush_queued = false;
  std::map<std::pair<drv::view_id, drv::gfn_t>, drv::page_access> previous;  // monitored pages
  std::vector<drv::view_id> views;  // created by this controller
  uint64_t calls = 0;
  uint64_t changes = 0;
  uint64_t failures = 0;
  std::shared_ptr<domain_metrics> metrics;

  void flush();
  /// One batched call, measured and counted.
  caf::error set_access(drv::view_id view, const std::vector<drv::access_change>& batch);
  void publish_page_counts();
  caf::error restore_everything();
};

ept_controller_impl::behavior_type
ept_controller(ept_controller_impl::stateful_pointer<ept_controller_state> self,
               std::shared_ptr<drv::domain_session> session,
               std::shared_ptr<domain_metrics> metrics);

}  // namespace vmitap
