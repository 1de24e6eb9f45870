#pragma once

// Checks what a monitor observed against the simulated hypervisor's ground truth: every
// breakpoint's hits against the executions of its address in its view, and the invariants
// (requests answered = raised, no VCPU left paused, no page left changed). Used by the sim
// backend's "verified" summary, the tests and the benchmarks. It knows nothing of actors:
// callers translate their reports into these plain records.

#include "drivers/session_counts.hpp"
#include "drivers/sim/hypervisor.hpp"

#include <string>
#include <vector>

namespace vmitap::sim {

struct observed_breakpoint {
  std::string name;
  uint64_t pa = 0;
  drv::view_id view = 0;
  uint64_t hits = 0;
  uint64_t filtered = 0;      ///< reached in a process its filter excludes
  bool whole_session = true;  ///< armed from the session's start (not added by a reload)
  bool removed = false;       ///< removed by a reload during the session
};

/// What one monitoring session of one domain reported when it ended.
struct observed_session {
  drv::domain_id id = 0;
  std::string name;
  bool died = false;
  drv::session_counts counts;  ///< what the monitor counted, summed over the VCPUs
  uint64_t access_calls = 0;
  std::vector<observed_breakpoint> breakpoints;
  /// Breakpoints the config gave this domain when the run started that the session never
  /// reported (neither armed nor removed): each one fails the verification.
  std::vector<std::string> never_armed;
  std::string error;      ///< its teardown error, if any
  uint32_t sessions = 1;  ///< more than one: several sessions' counts summed up
};

struct verification {
  bool ok = false;
  std::string table;  ///< one row per breakpoint and per domain, for people
};

/// Verifies `sessions` (the monitor's final reports) against `hv`. `expected` is the number of
/// sessions that must have reported (every selected domain at least once).
verification verify(hypervisor& hv, const std::vector<observed_session>& sessions, size_t expected);

}  // namespace vmitap::sim
