#pragma once

// The engine actor: owns the domain supervisors. It attaches every domain the config selects
// as it starts (or is already running), detaches the ones that stop, applies reloads, and on
// stop detaches everything within the deadline.

#include "actors/control/domain_supervisor.hpp"
#include "engine/engine_config.hpp"

#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <deque>
#include <functional>
#include <set>

namespace vmitap {

using engine_actor = caf::typed_actor<
  /// A domain started (or was running when vmitap started).
  caf::reacts_to<started_atom, drv::domain_info>,
  /// A domain stopped (died or was destroyed).
  caf::reacts_to<stopped_atom, drv::domain_info>,
  /// Every session's report: live ones (counted up to now) and the ones that ended.
  caf::replies_to<status_atom>::with<std::vector<domain_report>>,
  /// Applies a new, validated config: breakpoints changed in place, domains attached,
  /// detached or re-attached, sinks opened and closed.
  caf::replies_to<reload_atom, engine_config_ptr>::with<ok_atom>,
  /// Every file sink closes and reopens its file (logrotate moved it).
  caf::replies_to<reopen_atom>::with<ok_atom>,
  /// Detaches every domain; answers with every session's final report.
  caf::replies_to<stop_atom>::with<std::vector<domain_report>>>;

/// What the engine counts about itself; the exporter reads it.
struct engine_counters {
  counter attach_ok;
  counter attach_failed;
  std::atomic<int64_t> domains_monitored{0};
  counter reloads_ok;
  counter reloads_failed;
  std::atomic<bool> last_reload_ok{true};
  std::atomic<double> last_reload_success{0};  ///< unix seconds (start counts as one)
};

/// What the engine actor uses and does not own.
struct engine_environment {
  std::shared_ptr<drv::driver> driver;
  poller_pool* pollers = nullptr;
  std::shared_ptr<domain_directory> directory;
  std::shared_ptr<sink_book> sinks;  ///< every sink of the run (open and closed)
  engine_counters* counters = nullptr;
  std::string host;               ///< goes into every hit record
  handler_registry_ptr handlers;  ///< what breakpoints' `handler` names
};

struct engine_state {
  engine_state() = default;  // not an aggregate: CAF would build it from `self`
  static inline const char* name = "vmitap.engine";

  struct monitored {
    domain_supervisor_actor supervisor;
    drv::domain_info info;
    bool attached = false;
    teardown_watch_ptr watch;  ///< what its teardown is doing, should it overrun
    /// The last update left breakpoints unarmed (a symbol whose page was not mapped): the
    /// next reload sends the plan again, changed or not.
    bool unapplied = false;
  };

  engine_environment env;
  engine_config_ptr cfg;
  std::map<std::string, sink_handle> sinks;
  std::map<drv::domain_id, monitored> domains;
  /// Running domains more than one entry selects: not attached, reported once (a reload that
  /// gives one of them a single entry attaches it; a domain that stops leaves the set).
  std::set<drv::domain_id> refused;
  std::deque<domain_report> ended;
  /// Older ended sessions, folded by domain name past `ended_reports_kept`: the summary and
  /// the verification keep every session's counts in memory bounded by breakpoints.
  std::map<std::string, domain_report> folded;
  /// Every ended session's report: the folded ones first, then the newest as they ended.
  std::vector<domain_report> ended_reports() const;
  uint64_t next_session = 1;
  bool stopping = false;
  /// Detaches sent and not answered yet, whoever started them (a failed attach, a domain
  /// that stopped, a reload, the stop itself). The stop ends only when this is 0.
  size_t detaches_in_flight = 0;
  std::function<void()> after_detaches;  ///< the stop's last step, once none is in flight
};

engine_actor::behavior_type engine_behavior(engine_actor::stateful_pointer<engine_state> self,
                                            engine_environment env, engine_config_ptr cfg,
                                            std::map<std::string, sink_handle> sinks);

}  // namespace vmitap
