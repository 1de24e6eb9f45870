// vmitap-bench: vmitap against a single-threaded loop, a loop per domain and the floor, on the
// same simulated guests, side by side in one run: alternating, medians of repeated runs.
// `make bench` writes BENCHMARKS.md; the flags run one row for a closer look, `profile` the
// kernel profile section alone.

#include "bench/harness.hpp"
#include "bench/profile_load.hpp"
#include "bench/report.hpp"
#include "bench/scale.hpp"

#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

using namespace vmitap;
using namespace vmitap::bench;

namespace {

step_mode mode_of(const std::string& m) {
  return m == "classic"   ? step_mode::classic
         : m == "emulate" ? step_mode::emulate
                          : step_mode::fast;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"vmitap-bench: vmitap vs. single-threaded loops on the simulated hypervisor"};
  std::string markdown;
  suite_options opts;
  app.add_option("--markdown", markdown, "run the whole suite and write the report here");
  app.add_option("--reps", opts.reps, "alternating runs per row (medians are reported)")
    ->capture_default_str();
  app.add_option("--ms", opts.run_ms, "length of one run")->capture_default_str();
  workload one;
  std::string mode = "fast";
  uint64_t latency_us = 0;
  auto* row = app.add_subcommand("row", "one throughput row, printed");
  row->add_option("--domains", one.domains);
  row->add_option("--vcpus", one.vcpus);
  row->add_option("--breakpoints", one.breakpoints);
  row->add_option("--mode", mode);
  row->add_option("--latency-us", latency_us);
  uint64_t slow_us = 0;
  bool slow_sleeps = false;
  row->add_option("--slow-handler-us", slow_us, "a handler in the first domain holds each hit");
  row->add_flag("--slow-handler-sleeps", slow_sleeps, "it sleeps (default: it spins)");
  std::string only;
  row->add_option("--only", only, "run this monitor alone, --reps times (for a profiler)")
    ->check(CLI::IsMember({"vmitap", "single loop", "loop per domain", "floor"}));
  uint32_t domains = 1, breakpoints = 10000, vcpus = 1;
  auto* scale = app.add_subcommand("scale", "arm and tear down breakpoints at scale");
  scale->add_option("--domains", domains);
  scale->add_option("--breakpoints", breakpoints);
  scale->add_option("--vcpus", vcpus, "per domain");
  auto* profile =
    app.add_subcommand("profile", "read a generated kernel profile (ISF), plain and gzip");
  // Each profile read runs in a fresh process, this program run again (not in --help).
  std::string profile_load;
  app.add_option("--profile-load", profile_load)->group("");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);

  if (!profile_load.empty())
    return profile_load_child(profile_load);
  if (*profile) {
    auto r = profile_load_section();
    std::fputs(r.markdown.c_str(), stdout);
    return r.ok ? 0 : 1;
  }

  if (*scale) {
    auto s = run_scale(domains, breakpoints, vcpus);
    std::printf(
      "arm %.3f s (%lu reads, %lu writes, %lu view calls), teardown %.3f s, "
      "%.0f B heap (%.0f B per breakpoint), %s\n",
      s.arm_seconds, s.get_calls, s.set_calls, s.view_calls, s.teardown_seconds, s.heap_bytes,
      s.heap_per_breakpoint, s.exact ? "clean" : "NOT CLEAN");
    return s.exact ? 0 : 1;
  }
  if (*row) {
    one.mode = mode_of(mode);
    one.exit_latency = std::chrono::microseconds(latency_us);
    one.duration = std::chrono::milliseconds(opts.run_ms);
    monitor_options mo;
    mo.slow_handler = std::chrono::microseconds(slow_us);
    mo.slow_handler_sleeps = slow_sleeps;
    if (!only.empty()) {
      bool exact = true;
      for (auto k : all_monitors) {
        if (only != to_string(k))
          continue;
        for (int rep = 0; rep < opts.reps; ++rep) {
          auto r = run_once(k, one, mo);
          std::printf(
            "%s: %.0f events/s, %.3f µs CPU/event, A p50 %.2f p99 %.2f µs, B p99 "
            "%.2f µs%s\n",
            only.c_str(), r.events_per_second(), r.tool_cpu_us, quantile_us(r.response, 0.5),
            quantile_us(r.response, 0.99), quantile_us(r.lateness, 0.99),
            r.exact ? "" : " NOT EXACT");
          exact &= r.exact;
        }
      }
      return exact ? 0 : 1;
    }
    auto r = compare(one, opts, mo);
    print_row(one, r);
    return r.exact ? 0 : 1;
  }
  auto report = run_suite(opts);
  std::fputs(report.markdown.c_str(), stdout);
  if (!markdown.empty())
    if (auto* f = std::fopen(markdown.c_str(), "w")) {
      std::fputs(report.markdown.c_str(), f);
      std::fclose(f);
    }
  return report.exact ? 0 : 1;
}
