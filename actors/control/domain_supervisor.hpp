#pragma once

// One monitored domain session: attaches (paused until every breakpoint is armed), hands the
// domain's ring to a poller, applies breakpoint updates, and detaches in order:
// pause → the poller's final drain → remove breakpoints → restore access → all VCPUs to view 0
// → destroy views → driver detach. A stop that arrives while it attaches tears down whatever
// exists by then. A domain that died is cleaned up without touching it.

#include "actors/control/breakpoint_registry.hpp"
#include "actors/control/ept_controller.hpp"
#include "actors/control/teardown_watch.hpp"
#include "actors/handlers/handler_registry.hpp"
#include "actors/hotpath/poller.hpp"

#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <caf/typed_response_promise.hpp>

#include <functional>
#include <optional>

namespace vmitap {

struct supervisor_config {
  std::shared_ptr<drv::driver> driver;
  drv::domain_info info;
  plan_ptr plan;
  std::vector<sink_handle> sinks;
  handler_registry_ptr handlers;   ///< none: breakpoints' handlers are not called
  poller_pool* pollers = nullptr;  ///< outlives every supervisor
  std::shared_ptr<domain_directory> directory;
  uint64_t session = 0;            ///< this attach's serial, unique in the process
  bool detached_children = false;  ///< controller and registry on their own threads
  /// Where the teardown records its steps (the engine reads it if the detach overruns);
  /// the supervisor makes its own if none is given.
  teardown_watch_ptr watch;
};

/// The supervisor's full behaviour: its interface plus the pollers' answers to it (released)
/// and the deadline for each (to itself).
using domain_supervisor_impl =
  domain_supervisor_actor::extend<caf::reacts_to<released_atom, uint64_t>,
                                  caf::reacts_to<deadline_atom, uint64_t>,
                                  caf::reacts_to<locate_atom>>;

/// The ordered teardown's steps, in order (supervisor_teardown.cpp).
enum class teardown_step : uint8_t { pause, drain, report, clear, restore, detach };

/// Where a supervisor's teardown is. (Outside the state: clang cannot default-construct a
/// nested struct with member initializers before its enclosing class is complete.)
struct teardown_progress {
  teardown_step now = teardown_step::pause;
  caf::error first;      ///< the first error, the teardown's result
  domain_report report;  ///< from the report step on
};

struct domain_supervisor_state {
  domain_supervisor_state() = default;  // not an aggregate: CAF would build it from `self`
  domain_supervisor_state(const domain_supervisor_state&) = delete;
  domain_supervisor_state& operator=(const domain_supervisor_state&) = delete;
  ~domain_supervisor_state();
  static inline const char* name = "vmitap.domain_supervisor";

  enum class phase : uint8_t { idle, attaching, attached, detaching, done };

  supervisor_config cfg;
  phase now = phase::idle;
  std::shared_ptr<drv::domain_session> session;
  domain_ptr domain;
  std::map<std::string, drv::view_id> views;
  std::shared_ptr<const drv::kernel_map> kernel;  // found at attach if the plan has a profile
  uint32_t locate_tries = 0;                      // while no VCPU is in kernel mode (bounded)
  ept_controller_actor controller;
  breakpoint_registry_actor registry;
  std::shared_ptr<event_path> path;
  poller* owner = nullptr;    // the poller draining path
  handler_relay_actor relay;  // exits with the supervisor (its state's destructor)
  bool died = false;
  bool attached = false;  // the attach completed once (phase moves on to detaching)
  std::optional<caf::typed_response_promise<ok_atom>> attaching;
  std::optional<caf::typed_response_promise<domain_report>> detaching;
  plan_ptr next_plan;                     // an update that arrived while attaching
  std::vector<breakpoint_count> removed;  // by reloads, for the report (fold_breakpoints)
  domain_report final_report;             // a failed attach's teardown, kept for the detach to come
  std::optional<teardown_progress> teardown;  // from the teardown's start on
  /// Continuations waiting for a poller (release or sync), by token.
  std::map<uint64_t, std::function<void(bool timed_out)>> awaiting;
  uint64_t next_token = 1;
};

domain_supervisor_impl::behavior_type domain_supervisor(
  domain_supervisor_impl::stateful_pointer<domain_supervisor_state> self, supervisor_config cfg);

}  // namespace vmitap
