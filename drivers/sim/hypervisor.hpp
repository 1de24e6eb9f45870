#pragma once

// The simulated Xen host: its domains, its guest threads (runners) and the watch callbacks
// a driver registers to hear of domains that start and stop.

#include "drivers/sim/domain.hpp"
#include "drivers/sim/runner.hpp"

#include <map>
#include <memory>
#include <mutex>
#include <vector>

namespace vmitap::sim {

struct hypervisor_config {
  bool threaded = true;  ///< false: nothing runs until a test calls run_pending()
  uint32_t guest_threads = 1;
  uint32_t slice_instructions = 512;
  /// Latency model: an answered VCPU resumes only this long after its response (a VM exit
  /// and entry on real hardware: about 15 µs to 81 µs for a breakpoint round trip).
  std::chrono::nanoseconds exit_latency{0};
  /// Guest threads poll this long for work before they sleep.
  std::chrono::nanoseconds spin = std::chrono::microseconds(50);
};

class hypervisor {
public:
  explicit hypervisor(hypervisor_config cfg = {});
  ~hypervisor();
  hypervisor(const hypervisor&) = delete;
  hypervisor& operator=(const hypervisor&) = delete;

  /// Creates and starts a domain; watchers hear of it. Fails if its workload does not fit.
  caf::expected<std::shared_ptr<domain>> create_domain(domain_config cfg);
  /// Destroys a domain (as `xl destroy` would); watchers hear of it.
  void destroy_domain(drv::domain_id id);
  /// Reboots a domain as `xl reboot` does: destroyed, then created again under the same name
  /// with a new id. Returns the new domain.
  std::shared_ptr<domain> restart_domain(drv::domain_id id);
  std::shared_ptr<domain> find(drv::domain_id id) const;
  std::vector<std::shared_ptr<domain>> domains() const;

  uint64_t add_watch(std::function<void(const drv::domain_change&)> fn);
  void remove_watch(uint64_t token);

  /// Manual mode: runs due VCPU slices on this thread until none is due or `max_slices`
  /// ran. Returns how many ran.
  size_t run_pending(size_t max_slices = SIZE_MAX);

  const hypervisor_config& config() const { return cfg_; }
  /// CPU time the guest threads have used: the simulated hardware's share of a benchmark.
  std::chrono::nanoseconds guest_cpu_time() const;

private:
  void notify(const drv::domain_change& change);

  hypervisor_config cfg_;
  std::vector<std::unique_ptr<runner>> runners_;
  mutable std::mutex domains_mutex_;
  std::map<drv::domain_id, std::shared_ptr<domain>> domains_;
  /// Destroyed domains live on until the host goes: guest threads may still hold their VCPUs.
  std::vector<std::shared_ptr<domain>> graveyard_;
  drv::domain_id next_id_ = 1;

  std::mutex watch_mutex_;  // held while callbacks run, so remove_watch waits for them
  std::map<uint64_t, std::function<void(const drv::domain_change&)>> watches_;
  uint64_t next_watch_ = 1;
};

}  // namespace vmitap::sim
