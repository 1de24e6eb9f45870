#pragma once

// The handler relay of one domain session: takes each held hit to its handler (one instance
// per handler name, spawned at its first hit) with the breakpoint's deadline, and gives the
// path exactly one answer per hit: the decision, or "resume" at the deadline, on an error,
// for a handler that died or whose queue is full. Counts handler time, timeouts, failures
// and dropped calls; logs each cause at most once per log interval.

#include "actors/handlers/handler_registry.hpp"
#include "actors/model/log_limit.hpp"
#include "actors/model/monitored_domain.hpp"

#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

namespace vmitap {

/// Where a held hit's decision goes: the hot path that holds its VCPU's response.
class held_responses {
public:
  virtual ~held_responses() = default;
  /// From any thread: the decision for the response held under `token` (nothing: resume as
  /// without a handler). An answer after the VCPU was already resumed is ignored.
  virtual void decided(drv::vcpu_id vcpu, uint64_t token, std::optional<handler_decision> d) = 0;
};

/// A hit whose response the hot path holds until its handler decides.
struct handler_call {
  std::shared_ptr<const handler_binding> handler;
  handler_hit hit;
  uint64_t token = 0;                  ///< names the held response in its path
  std::weak_ptr<held_responses> path;  ///< where the decision goes
};

/// One per domain session: takes held hits from the hot path to their handlers and every
/// decision, timeout or handler failure back to the path (exactly one per hit).
using handler_relay_actor = caf::typed_actor<caf::reacts_to<hit_atom, handler_call>>;

struct handler_relay_state {
  static inline const char* name = "vmitap.handler_relay";

  struct waiting {
    std::weak_ptr<held_responses> path;
    drv::vcpu_id vcpu = 0;
    std::shared_ptr<const handler_binding> handler;
  };
  /// A handler instance and the calls it has queued or running (answered, failed, or given
  /// up on handler_answer_limit after the deadline): at most handler_queue_bound.
  struct instance {
    hit_handler_actor actor;
    size_t queued = 0;
  };

  handler_registry_ptr registry;
  domain_ptr domain;
  std::map<std::string, instance, std::less<>> instances;
  std::map<uint64_t, waiting> pending;  ///< by token: hits whose answer is still to give
  log_limit timeouts_log, failures_log, full_log;
};

/// The relay's own deadline timer comes back to it under this private message.
using handler_relay_impl = handler_relay_actor::extend<caf::reacts_to<deadline_atom, uint64_t>>;

/// Exits (and stops its handler instances) on an exit message, e.g. its supervisor's.
handler_relay_impl::behavior_type handler_relay(
  handler_relay_impl::stateful_pointer<handler_relay_state> self, handler_registry_ptr registry,
  domain_ptr domain);

}  // namespace vmitap
