// vmitap-bench: vmitap against a single-threaded loop, a loop per domain and the floor, on the
// same simulated guests, side by side in one run. `make bench` writes BENCHMARKS.md.

#include "bench/harness.hpp"
#include "bench/scale.hpp"

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>

using namespace vmitap;
using namespace vmitap::bench;

int main(int argc, char** argv) {
  CLI::App app{"vmitap-bench"};
  workload w;
  std::string mode = "fast";
  int reps = 3;
  app.add_option("--domains", w.domains);
  app.add_option("--vcpus", w.vcpus);
  app.add_option("--breakpoints", w.breakpoints);
  app.add_option("--mode", mode);
  app.add_option("--reps", reps);
  uint64_t latency_us = 0, ms = 1000;
  app.add_option("--latency-us", latency_us);
  app.add_option("--ms", ms);
  std::string only;
  uint64_t spin_us = 50;
  app.add_option("--spin-us", spin_us);
  app.add_option("--only", only);
  uint32_t scale_domains = 0, scale_bps = 0;
  app.add_option("--scale-domains", scale_domains);
  app.add_option("--scale-breakpoints", scale_bps);
  CLI11_PARSE(app, argc, argv);
  if (scale_domains) {
    spdlog::set_level(spdlog::level::warn);
    auto s = run_scale(scale_domains, scale_bps);
    std::printf("arm %.3f s (get %lu set %lu views %lu calls) teardown %.3f s heap %.0f B/bp %s\n",
                s.arm_seconds, s.get_calls, s.set_calls, s.view_calls, s.teardown_seconds,
                s.heap_per_breakpoint, s.exact ? "clean" : "NOT CLEAN");
    return 0;
  }
  spdlog::set_level(spdlog::level::warn);
  w.mode = mode == "classic" ? step_mode::classic : mode == "emulate" ? step_mode::emulate : step_mode::fast;
  w.exit_latency = std::chrono::microseconds(latency_us);
  w.duration = std::chrono::milliseconds(ms);
  w.guest_spin = std::chrono::microseconds(spin_us);
  monitor_options opts;
  opts.spin = std::chrono::microseconds(spin_us);
  for (int r = 0; r < reps; ++r)
    for (auto k : {monitor_kind::engine, monitor_kind::loop, monitor_kind::per_domain, monitor_kind::floor}) {
      if (!only.empty() && only != to_string(k))
        continue;
      auto res = run_once(k, w, opts);
      std::printf("%-16s %10.0f ev/s %6.3f us/ev  A p50 %6.2f p99 %7.2f  B p50 %6.2f p99 %7.2f  %s\n",
                  to_string(k), res.events_per_second(), res.tool_cpu_us,
                  res.response.quantile(0.5) / 1e3, res.response.quantile(0.99) / 1e3,
                  res.lateness.quantile(0.5) / 1e3, res.lateness.quantile(0.99) / 1e3,
                  res.exact ? "exact" : "NOT EXACT");
    }
}
