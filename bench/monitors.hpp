#pragma once

// What the benchmark compares, side by side on the same simulated guests, all through the
// same driver port and the same way of waiting for events (poll for a while, then sleep):
//   engine  – vmitap: pollers, actors, counters, the registry's tables;
//   loop    – one thread drains every domain's ring and decides inline (LibVMI / vmi-rs);
//   per_domain – one such thread per domain (DRAKVUF runs one process per VM);
//   floor   – one thread that answers every request with the step-over and nothing else.

#include "actors/model/plan.hpp"
#include "drivers/sim/sim_driver.hpp"

#include <chrono>
#include <memory>
#include <string>

namespace vmitap::bench {

enum class monitor_kind : uint8_t { engine, loop, per_domain, floor };
const char* to_string(monitor_kind k);

/// One domain as the baselines monitor it: a view, its breakpoints by address.
struct domain_spec {
  std::shared_ptr<sim::domain> dom;
  plan_ptr plan;
};

/// A running monitor; `stop()` detaches everything and returns the hits per (domain, pa).
class monitor {
public:
  virtual ~monitor() = default;
  virtual caf::error start() = 0;
  /// Events handled so far (for throughput).
  virtual uint64_t events() = 0;
  /// Detaches; returns false if anything was not exact or clean.
  virtual bool stop_and_verify() = 0;
  /// CPU time of the monitor's own threads (pollers or loop threads).
  virtual std::chrono::nanoseconds tool_cpu() = 0;
};

struct monitor_options {
  std::chrono::nanoseconds spin = std::chrono::microseconds(50);
  size_t pollers = 1;
  /// A handler in the first domain that holds each hit's VCPU this long (0: none).
  std::chrono::nanoseconds slow_handler{0};
  bool slow_handler_sleeps = false;
};

/// What the slow handler does at each hit: spin or sleep for `opts.slow_handler`.
void slow_handler(const monitor_options& opts);

std::unique_ptr<monitor> make_monitor(monitor_kind kind, std::shared_ptr<sim::hypervisor> hv,
                                      std::vector<domain_spec> domains, monitor_options opts);

}  // namespace vmitap::bench
