#pragma once

// The built-in demo: several simulated domains monitored at once, a live progress line, and
// a final summary that checks every breakpoint's hits against the sim's ground truth.

#include "drivers/sim/hypervisor.hpp"
#include "engine/engine.hpp"

#include <chrono>
#include <string>

namespace vmitap {

struct demo_options {
  uint64_t instructions_per_vcpu = 3'000'000;
  std::chrono::seconds max_duration{3600};
  std::string hits_path = "vmitap-hits.jsonl";
  size_t worker_threads = defaults::worker_threads;
  std::chrono::nanoseconds exit_latency{0};
  std::string metrics_listen = defaults::metrics_listen;
};

/// The demo's plan for one domain: breakpoints on hot function entries, one inside a
/// function, two sharing a page; with `two_views`, VCPU 1 lives in a second view that has a
/// breakpoint at the same address.
engine_config::domain_entry demo_entry(sim::domain& dom, step_mode mode, bool two_views);

/// Creates the demo's domains in `hv` and returns the plan that monitors them.
engine_config demo_topology(sim::hypervisor& hv, const demo_options& opt);

/// Checks reports against ground truth and prints the summary; true if everything holds and
/// there is a report for each of the `expected` domains.
bool verify_and_print(sim::hypervisor& hv, const std::vector<domain_report>& reports,
                      size_t expected, std::FILE* out);

/// Runs `cfg` on the simulated hypervisor `hv` until its guests finish, a signal arrives or
/// `max_duration` passes; prints progress and the verified summary. Returns the exit code
/// (0 only if everything was verified; 2 if the engine could not start).
/// SIGHUP calls `reload` for a new config; an error keeps the running one.
using config_reader = std::function<caf::expected<engine_config>()>;

int run_on_sim(std::shared_ptr<sim::hypervisor> hv, const engine_config& cfg,
               std::chrono::seconds max_duration, const std::string& title,
               config_reader reload = {});

/// Runs the built-in demo.
int run_demo(const demo_options& opt);

}  // namespace vmitap
