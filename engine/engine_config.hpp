#pragma once

// What the engine runs: which domains (selected by id, name or glob) get which plan, where
// their hits go, and the engine's own settings. Built from the config file (engine/config*)
// or by a program that embeds vmitap.

#include "actors/model/plan.hpp"
#include "actors/records/sinks.hpp"
#include "drivers/defaults.hpp"

#include <optional>
#include <string>
#include <vector>

namespace vmitap {

/// Which domains a plan applies to: by id, by exact name, or by a glob pattern on the name.
struct domain_selector {
  std::optional<drv::domain_id> id;
  std::string name;
  std::string pattern;
  bool matches(const drv::domain_info& d) const;
  /// "name=web-1", "id=3", "pattern=db-*": for messages.
  std::string describe() const;
  bool operator==(const domain_selector&) const = default;
};

struct engine_config {
  size_t worker_threads = defaults::worker_threads;
  size_t pollers = 0;  ///< 0: one per core the backend leaves free
  std::chrono::nanoseconds poller_spin = defaults::poller_spin;
  bool detached_children = false;  ///< controllers and registries on their own threads
  std::chrono::milliseconds stop_deadline = defaults::stop_deadline;
  std::string metrics_listen = defaults::metrics_listen;  ///< host:port; empty: no exporter
  /// Reports of sessions that ended, kept apart for the final summary; older ones are
  /// folded into one per domain name, so no session's counts are lost.
  size_t ended_reports_kept = 1024;
  std::vector<sink_config> sinks;
  struct domain_entry {
    domain_selector select;
    plan_ptr plan = std::make_shared<domain_plan>();
    std::vector<std::string> sinks;  ///< names from `sinks`
    uint32_t line = 0;               ///< where the config file has it (0: not from a file)
  };
  std::vector<domain_entry> domains;

  /// The entry that selects `info`; none if no entry or more than one does (a domain must
  /// match exactly one: entries_for tells them apart).
  const domain_entry* entry_for(const drv::domain_info& info) const;
  /// Every entry that selects `info`.
  std::vector<const domain_entry*> entries_for(const drv::domain_info& info) const;
  /// These engine settings with `next`'s topology (sinks and domains): what a reload applies.
  /// Threads, deadlines and the exporter take effect at the next start only.
  engine_config with_topology_of(const engine_config& next) const;
  /// Whether `other` has the same engine settings (everything but the topology).
  bool same_settings(const engine_config& other) const;
};

using engine_config_ptr = std::shared_ptr<const engine_config>;

}  // namespace vmitap

// The engine's own message types, in the ID block after the actors' one.
CAF_BEGIN_TYPE_ID_BLOCK(vmitap_engine, caf::id_block::vmitap::end)
CAF_ADD_TYPE_ID(vmitap_engine, (vmitap::engine_config_ptr))
CAF_END_TYPE_ID_BLOCK(vmitap_engine)

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vmitap::engine_config_ptr)
