#pragma once

#include "actors/interfaces.hpp"
#include "actors/sinks.hpp"
#include "engine/metrics.hpp"

#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <map>

namespace vmitap {

struct domain_supervisor_state {
  domain_supervisor_state() = default;  // not an aggregate: CAF would build it from `self`
  static inline const char* name = "vmitap.domain_supervisor";
  std::shared_ptr<drv::driver> driver;
  drv::domain_info info;
  domain_plan plan;
  std::vector<sink_handle> sinks;
  bool detached_children = false;
  std::shared_ptr<domain_metrics> metrics;

  std::shared_ptr<drv::domain_session> session;
  std::map<std::string, drv::view_id> views;
  ept_controller_actor controller;
  breakpoint_registry_actor registry;
  std::vector<vcpu_actor> vcpus;
  std::map<std::string, uint64_t> breakpoint_ids;  // name → registry id
  bool died = false;
  bool detached = false;
  uint64_t orphans = 0;
};

domain_supervisor_actor::behavior_type
domain_supervisor(domain_supervisor_actor::stateful_pointer<domain_supervisor_state> self,
                  std::shared_ptr<drv::driver> driver, drv::domain_info info, domain_plan plan,
                  std::vector<sink_handle> sinks, bool detached_children,
                  std::shared_ptr<domain_metrics> metrics);

}  // namespace vmitap
