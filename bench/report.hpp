#pragma once

// The benchmark suite: every row compares the four monitors in alternating runs on fresh
// guests and reports medians (latencies: pooled over the runs). The report is BENCHMARKS.md.

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
  sim::latency_histogram a;      ///< pooled
  sim::latency_histogram b;
  double others_per_second = 0;  ///< median: every domain but the first
  sim::latency_histogram others_a;
  bool exact = true;             ///< every run
};

struct comparison {
  std::map<monitor_kind, summary> by;
  bool exact = true;
};

comparison compare(const workload& w, const suite_options& opts,
                   const monitor_options& mo = {});
void print_row(const workload& w, const comparison& c);

struct suite_report {
  std::string markdown;
  bool exact = true;
};

suite_report run_suite(const suite_options& opts);

}  // namespace vmitap::bench
