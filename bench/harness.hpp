#pragma once

// One benchmark run: a fresh simulated host with the workload's guests, one monitor, a fixed
// time, then the figures: events/s, the monitor's CPU per event, the hardware's view of its
// latency (A: request raised → response, B: resume due → running), and whether every hit
// was exact.

#include "bench/monitors.hpp"
#include "drivers/sim/latency.hpp"

namespace vmitap::bench {

struct workload {
  uint32_t domains = 4;
  uint32_t vcpus = 2;
  uint32_t breakpoints = 5;  ///< per domain
  step_mode mode = step_mode::fast;
  std::chrono::nanoseconds exit_latency{0};
  std::chrono::milliseconds duration{1000};
  std::chrono::nanoseconds guest_spin = std::chrono::microseconds(50);
  std::string describe() const;
};

struct run_result {
  double seconds = 0;
  uint64_t events = 0;
  double tool_cpu_us = 0;                  ///< per event
  sim::latency_histogram response;         ///< A
  sim::latency_histogram lateness;         ///< B
  uint64_t others_events = 0;              ///< requests raised by every domain but the first
  sim::latency_histogram others_response;  ///< A of every domain but the first
  bool exact = false;
  double events_per_second() const { return seconds > 0 ? double(events) / seconds : 0; }
};

/// The plan for one domain: `count` breakpoints at instruction starts spread over its code.
plan_ptr spread_plan(const sim::program& code, uint32_t count, step_mode mode);

run_result run_once(monitor_kind kind, const workload& w, const monitor_options& opts);

/// The latency below which a fraction `q` of `h`'s recordings lie, in µs.
inline double quantile_us(const sim::latency_histogram& h, double q) {
  return double(h.quantile(q)) / 1e3;
}

/// How many CPUs a run gives the monitor: all but the one the simulated hardware runs on.
int monitor_cpus();

}  // namespace vmitap::bench
