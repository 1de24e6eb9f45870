#pragma once

// The engine as a program uses it: an actor system, the pollers, the exporter, the engine
// actor; start, status, reload, reopen, stop. Everything behind it is asynchronous; these
// calls wait for their answers (each bounded by a timeout).

#include "engine/engine_actor.hpp"
#include "engine/http_exporter.hpp"
#include "engine/metrics.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>

namespace vmitap {

/// One domain's counts for a progress line, cheap to read (no actor is asked).
struct domain_progress {
  std::string name;
  drv::domain_id id = 0;
  uint64_t events = 0;
  uint64_t hits = 0;
};

class engine {
public:
  /// `reserved_cores`: cores the backend's own threads use (the sim's guest threads), so
  /// that the default number of pollers leaves them free. `handlers`: what breakpoints'
  /// `handler` keys name (the config was validated against the same names).
  engine(engine_config cfg, std::shared_ptr<drv::driver> driver, size_t reserved_cores = 0,
         handler_registry_ptr handlers = nullptr);
  ~engine();
  engine(const engine&) = delete;
  engine& operator=(const engine&) = delete;

  /// Starts the exporter and the sinks, watches the driver and attaches the running domains
  /// the config selects. Errors: listen_failed (exporter), io_failed (a sink), the driver's.
  caf::error start();
  /// Every session's report; every request raised before the call is counted.
  std::vector<domain_report> status();
  /// Live sessions' counts, in a stable order (name, then id).
  std::vector<domain_progress> progress() const;
  /// Applies a new, validated config (domains, breakpoints, sinks; not the engine section).
  caf::error reload(engine_config next);
  /// Every file sink reopens its file (after logrotate moved it).
  caf::error reopen_sinks();
  /// Detaches every domain (within the stop deadline) and returns every session's report.
  /// A teardown that overruns it is reported and goes on; if its actors are still busy
  /// after another stop deadline (a driver call that does not return), they are left behind:
  /// `abandoned()` says so, and the process should exit without destroying this engine.
  std::vector<domain_report> stop();
  bool abandoned() const { return abandoned_; }
  /// What every sink of the run wrote, failed and dropped, by name (closed ones included).
  std::vector<sink_book::totals> sink_totals() const { return sink_book_->sum(); }
  /// Function handlers still in a call (they may block; the stop does not wait for them).
  /// Non-zero after the stop: the process should exit without destroying this engine.
  uint32_t handler_calls_running() const;

  /// Counts a reload (SIGHUP) as applied or rejected, for the exporter.
  void count_reload(bool ok);

  caf::actor_system& system() { return *system_; }
  const engine_counters& counters() const { return counters_; }
  poller_pool& pollers() { return *pollers_; }
  /// What /metrics serves, as families (for tests).
  std::vector<prometheus::MetricFamily> collect() const;
  /// The exporter's port (0 without one); useful with port 0.
  uint16_t metrics_port() const { return exporter_ ? exporter_->port() : 0; }
  const engine_config& config() const { return cfg_; }

private:
  engine_config cfg_;
  std::shared_ptr<drv::driver> driver_;
  handler_registry_ptr handlers_;
  engine_counters counters_;
  std::shared_ptr<domain_directory> directory_ = std::make_shared<domain_directory>();
  std::shared_ptr<sink_book> sink_book_ = std::make_shared<sink_book>();
  std::vector<std::shared_ptr<prometheus::Collectable>> collectables_;
  std::unique_ptr<poller_pool> pollers_;  // outlives the actors that hand it rings
  caf::actor_system_config system_cfg_;
  std::unique_ptr<caf::actor_system> system_;
  std::unique_ptr<http_exporter> exporter_;
  engine_actor actor_;
  bool stopped_ = false;
  bool abandoned_ = false;
};

/// The version and revision this binary was built from.
build_identity this_build();

}  // namespace vmitap
