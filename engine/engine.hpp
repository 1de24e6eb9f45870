#pragma once

// The engine: owns the actor system, attaches every domain its plan selects (also those that
// start later), and detaches them all, in order, on stop.

#include "actors/domain_supervisor.hpp"
#include "actors/interfaces.hpp"
#include "actors/sinks.hpp"
#include "engine/defaults.hpp"
#include "engine/metrics.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>

#include <prometheus/exposer.h>

#include <optional>

namespace vmitap {

/// Which domains a plan applies to: by id, by exact name, or by a glob pattern on the name.
struct domain_selector {
  std::optional<drv::domain_id> id;
  std::string name;
  std::string pattern;
  bool matches(const drv::domain_info& d) const;
};

struct engine_config {
  size_t worker_threads = defaults::worker_threads;
  bool detached_event_sources = false;  ///< VCPU actors and controllers on their own threads
  std::chrono::milliseconds stop_deadline = defaults::stop_deadline;
  std::string metrics_listen = defaults::metrics_listen;  ///< host:port; empty: no exporter
  std::vector<sink_config> sinks;
  struct domain_entry {
    domain_selector select;
    domain_plan plan;
    std::vector<std::string> sinks;  ///< names from `sinks`
  };
  std::vector<domain_entry> domains;
};

class engine {
public:
  engine(engine_config cfg, std::shared_ptr<drv::driver> driver);
  ~engine();
  engine(const engine&) = delete;
  engine& operator=(const engine&) = delete;

  /// Opens the sinks, watches the driver and attaches the running domains it selects.
  caf::error start();
  /// Reports of every domain, live ones and those that ended.
  std::vector<domain_report> status();
  /// Applies a new, validated config (breakpoints, domains, sinks); the simulated host and
  /// the engine section stay as they are. On error the running topology is kept where it
  /// could not be changed.
  caf::error reload(engine_config next);
  /// Detaches every domain (within the stop deadline) and returns their final reports.
  std::vector<domain_report> stop();

  caf::actor_system& system() { return *system_; }
  vmitap::metrics& metrics() { return metrics_; }
  /// The port the exporter listens on (0 without one); useful with ":0".
  int metrics_port() const;
  engine_actor handle() const { return actor_; }

private:
  void stop_actors(std::vector<domain_report>& out);

  engine_config cfg_;
  std::shared_ptr<drv::driver> driver_;
  vmitap::metrics metrics_;  // outlives the actor system: actors hold its series
  std::unique_ptr<prometheus::Exposer> exposer_;
  caf::actor_system_config system_cfg_;
  std::unique_ptr<caf::actor_system> system_;
  engine_actor actor_;
  std::vector<sink_handle> sinks_;
  bool stopped_ = false;
};

}  // namespace vmitap
