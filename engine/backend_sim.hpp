#pragma once

// The simulated hypervisor as a backend: its [sim] section (the guests to create and the
// latency model), its driver, and the ground truth it verifies a run against.

#include "drivers/sim/hypervisor.hpp"
#include "engine/backends.hpp"

namespace vmitap {

struct sim_options {
  std::chrono::nanoseconds exit_latency{0};
  uint32_t guest_threads = 1;
  std::vector<sim::domain_config> domains;
};

backend sim_backend();

/// The sim's ground truth over `hv`: verifies reports against it; `finished` once every
/// guest of a bounded workload has halted.
std::shared_ptr<ground_truth> sim_truth(std::shared_ptr<sim::hypervisor> hv, engine_config cfg);

}  // namespace vmitap
