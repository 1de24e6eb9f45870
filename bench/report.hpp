#pragma once

// The benchmark suite: every row compares the four monitors in alternating runs on fresh
// guests and reports medians (of events/s, of each run's latency percentiles, of paired
// runs' ratios). The report is BENCHMARKS.md.

#include "bench/harness.hpp"

#include <map>
#include <string>

namespace vmitap::bench {

struct suite_options {
  int reps = 3;
  uint64_t run_ms = 400;
};

inline constexpr monitor_kind all_monitors[] = {monitor_kind::engine, monitor_kind::loop,
                                                monitor_kind::per_domain, monitor_kind::floor};

struct summary {
  double events_per_second = 0;  ///< median
  double cpu_us = 0;             ///< median, per event, the monitor's threads only
  // Latencies, one histogram per run: a figure is the median of the runs' percentiles, so
  // one run's bad moment on a shared machine does not become every run's tail.
  std::vector<sim::latency_histogram> a;
  std::vector<sim::latency_histogram> b;
  double others_per_second = 0;  ///< median: every domain but the first
  std::vector<sim::latency_histogram> others_a;
  bool exact = true;  ///< every run
};

struct comparison {
  std::map<monitor_kind, summary> by;
  std::map<monitor_kind, std::vector<double>> runs;  ///< events/s of each run, in run order
  bool exact = true;
  /// The median of a's events/s ÷ b's over the runs, each pair from the same round (the
  /// machine's speed drifts between rounds; a pair shares its moment).
  double paired_ratio(monitor_kind a, monitor_kind b) const;
};

comparison compare(const workload& w, const suite_options& opts, const monitor_options& mo = {});
void print_row(const workload& w, const comparison& c);

struct suite_report {
  std::string markdown;
  bool exact = true;
};

suite_report run_suite(const suite_options& opts);

}  // namespace vmitap::bench
