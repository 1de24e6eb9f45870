#pragma once

// The handler relay of one domain session: takes each held hit to its handler (one instance
// per handler name, spawned at its first hit) with the breakpoint's deadline, and gives the
// path exactly one answer per hit: the decision, or "resume" on a timeout, an error or a
// handler that died. Counts handler time, timeouts and failures; logs once per streak.

#include "actors/handler_registry.hpp"
#include "actors/monitored_domain.hpp"

#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

namespace vmitap {

struct handler_relay_state {
  static inline const char* name = "vmitap.handler_relay";

  struct waiting {
    std::weak_ptr<event_path> path;
    drv::vcpu_id vcpu = 0;
    caf::actor_addr handler;
  };

  handler_registry_ptr registry;
  domain_ptr domain;
  std::map<std::string, hit_handler_actor, std::less<>> instances;
  std::map<uint64_t, waiting> pending;  ///< by token: hits whose answer is still to give
  bool timing_out = false;              ///< in a streak of timeouts (logged once)
  bool failing = false;                 ///< in a streak of handler failures (logged once)
};

/// Exits (and stops its handler instances) on an exit message, e.g. its supervisor's.
handler_relay_actor::behavior_type
handler_relay(handler_relay_actor::stateful_pointer<handler_relay_state> self,
              handler_registry_ptr registry, domain_ptr domain);

}  // namespace vmitap
