#pragma once

#include "actors/interfaces.hpp"
#include "engine/metrics.hpp"

#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <caf/typed_response_promise.hpp>

#include <map>

namespace vmitap {

struct breakpoint_registry_state {
  breakpoint_registry_state() = default;  // not an aggregate: CAF would build it from `self`
  static inline const char* name = "vmitap.breakpoint_registry";

  enum class phase : uint8_t {
    applying,   // monitor requested, not confirmed
    monitored,  // Execute removed in the guest (possibly with no breakpoint left: restore failed)
    restoring,  // restore requested, not confirmed
  };

  struct page {
    drv::view_id view = 0;
    drv::gfn_t gfn = 0;
    phase state = phase::applying;
    std::vector<breakpoint_ptr> breakpoints;
    std::vector<caf::typed_response_promise<uint64_t>> adding;   // answered with their ids
    std::vector<uint64_t> adding_ids;
    std::vector<caf::typed_response_promise<ok_atom>> removing;
  };

  ept_controller_actor controller;
  std::vector<vcpu_actor> vcpus;
  std::vector<drv::view_id> views;
  drv::gfn_t max_gfn = 0;
  uint64_t next_id = 1;
  uint64_t version = 0;
  std::map<uint64_t, page> pages;  // page_key → page
  std::map<uint64_t, breakpoint_ptr> by_id;
  std::vector<caf::typed_response_promise<ok_atom>> clearing;
  caf::error clear_error;
  std::shared_ptr<domain_metrics> metrics;
};

breakpoint_registry_actor::behavior_type
breakpoint_registry(breakpoint_registry_actor::stateful_pointer<breakpoint_registry_state> self,
                    ept_controller_actor controller, std::vector<vcpu_actor> vcpus,
                    std::vector<drv::view_id> views, drv::gfn_t max_gfn,
                    std::shared_ptr<domain_metrics> metrics);

}  // namespace vmitap
