#include "bench/report.hpp"

#include "bench/profile_load.hpp"
#include "bench/scale.hpp"
#include "engine/engine.hpp"

#include <spdlog/spdlog.h>

#include <sys/resource.h>
#include <sys/utsname.h>
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <thread>

namespace vmitap::bench {

namespace {

double median(std::vector<double> xs) {
  if (xs.empty())
    return 0;
  std::sort(xs.begin(), xs.end());
  auto n = xs.size();
  return n % 2 ? xs[n / 2] : (xs[n / 2 - 1] + xs[n / 2]) / 2;
}

/// The median over the runs of each run's `q` quantile, in µs.
double us(const std::vector<sim::latency_histogram>& runs, double q) {
  std::vector<double> xs;
  for (auto& h : runs)
    xs.push_back(quantile_us(h, q));
  return median(std::move(xs));
}

std::string machine() {
  utsname u{};
  uname(&u);
  std::string cpu = "unknown";
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("model name", 0) == 0) {
      cpu = line.substr(line.find(':') + 2);
      break;
    }
  return fmt::format("{} cores ({}), {} {}, vmitap {} ({})", std::thread::hardware_concurrency(),
                     cpu, u.sysname, u.release, this_build().version, this_build().revision);
}

std::string ratio(double a, double b) {
  return b > 0 ? fmt::format("{:.2f}", a / b) : "–";
}

}  // namespace

double comparison::paired_ratio(monitor_kind a, monitor_kind b) const {
  auto& xs = runs.at(a);
  auto& ys = runs.at(b);
  std::vector<double> ratios;
  for (size_t i = 0; i < xs.size() && i < ys.size(); ++i)
    if (ys[i] > 0)
      ratios.push_back(xs[i] / ys[i]);
  return median(std::move(ratios));
}

comparison compare(const workload& w, const suite_options& opts, const monitor_options& mo) {
  comparison c;
  std::map<monitor_kind, std::vector<double>> eps, cpu, others;
  for (int r = 0; r < opts.reps; ++r)  // alternate, so drift hits every monitor alike
    for (auto k : all_monitors) {
      auto res = run_once(k, w, mo);
      eps[k].push_back(res.events_per_second());
      cpu[k].push_back(res.tool_cpu_us);
      others[k].push_back(res.seconds > 0 ? double(res.others_events) / res.seconds : 0);
      auto& s = c.by[k];
      s.others_a.push_back(res.others_response);
      s.a.push_back(res.response);
      s.b.push_back(res.lateness);
      s.exact &= res.exact;
      c.exact &= res.exact;
    }
  c.runs = eps;
  for (auto k : all_monitors) {
    c.by[k].events_per_second = median(eps[k]);
    c.by[k].cpu_us = median(cpu[k]);
    c.by[k].others_per_second = median(others[k]);
  }
  return c;
}

void print_row(const workload& w, const comparison& c) {
  std::printf("%s\n", w.describe().c_str());
  for (auto k : all_monitors) {
    auto& s = c.by.at(k);
    std::printf(
      "  %-16s %10.0f ev/s %6.3f µs CPU/ev  A p50 %6.2f p99 %7.2f  B p50 %6.2f p99 %7.2f  "
      "others %10.0f ev/s p99 %7.2f  %s\n",
      to_string(k), s.events_per_second, s.cpu_us, us(s.a, 0.5), us(s.a, 0.99), us(s.b, 0.5),
      us(s.b, 0.99), s.others_per_second, us(s.others_a, 0.99), s.exact ? "exact" : "NOT EXACT");
  }
  for (auto k : all_monitors) {
    std::printf("  %-16s A p99 of each run:", to_string(k));
    for (auto& h : c.by.at(k).a)
      std::printf(" %.2f", quantile_us(h, 0.99));
    std::printf("\n");
  }
  std::printf("  paired ratios: vmitap ÷ loop %.2f, floor ÷ loop %.2f\n",
              c.paired_ratio(monitor_kind::engine, monitor_kind::loop),
              c.paired_ratio(monitor_kind::floor, monitor_kind::loop));
  std::fflush(stdout);
}

suite_report run_suite(const suite_options& opts) {
  suite_report out;
  auto& md = out.markdown;
  auto t0 = std::chrono::steady_clock::now();
  md += "# Benchmarks\n\n";
  md += fmt::format(
    "Written by `make bench` (`bench/`, Release build) on {}. Every row runs "
    "vmitap, a single-threaded loop over all domains (LibVMI / vmi-rs style), "
    "one loop thread per domain (DRAKVUF style) and the floor (one thread that "
    "answers every request with the step-over and does nothing else) on fresh, "
    "identical simulated guests, alternating, {} runs of {} ms each; figures "
    "are medians (latencies: of the runs' percentiles, each run's measured window "
    "only, as events/s; attach and detach are not counted). All four use the same "
    "driver port and the same way of waiting (poll for 50 µs, then sleep). The "
    "simulated hardware runs on its own thread (one guest thread) and CPU (the "
    "last one), the monitor's threads on the other CPUs: on Xen, guest VCPUs and "
    "dom0's monitor do not share a CPU either.\n\n",
    machine(), opts.reps, opts.run_ms);
  md +=
    "- *events/s*: requests answered per second. *CPU*: µs of the monitor's own threads "
    "per event (pollers or loop threads; the guest thread is not counted).\n"
    "- *A*: request raised → response received, as the hardware sees it (what a guest "
    "waits on the monitor). *B*: VCPU due to resume → running again (the simulated "
    "hardware's own lateness, printed so A can be judged).\n"
    "- *% ideal* (exit-latency rows): events/s ÷ (VCPUs ÷ exit latency).\n"
    "- *exact*: every run's hits equal the ground truth, every request answered, nothing "
    "left paused or changed.\n\n";

  // Throughput.
  md +=
    "## Throughput\n\nRatios are medians of the runs' own ratios (each pair run in the same "
    "round). The floor ÷ loop column is the most any monitor could gain on the loop: the "
    "floor does nothing but answer, so what limits it is the guest thread.\n\n"
    "| workload | vmitap | loop | loop/domain | floor | vmitap ÷ loop | "
    "vmitap ÷ loop/domain | floor ÷ loop | CPU µs/event vmitap / loop / loop/domain "
    "| % ideal vmitap / loop | exact |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n";
  struct size {
    uint32_t domains, vcpus;
  };
  for (auto sz : {size{1, 2}, size{16, 8}, size{64, 4}})
    for (uint32_t bps : {5u, 1000u})
      for (auto mode : {step_mode::fast, step_mode::classic, step_mode::emulate})
        for (int latency : {0, 15, 81}) {
          workload w;
          w.domains = sz.domains;
          w.vcpus = sz.vcpus;
          w.breakpoints = bps;
          w.mode = mode;
          w.exit_latency = std::chrono::microseconds(latency);
          w.duration = std::chrono::milliseconds(opts.run_ms);
          auto c = compare(w, opts);
          print_row(w, c);
          auto& e = c.by[monitor_kind::engine];
          auto& l = c.by[monitor_kind::loop];
          auto& p = c.by[monitor_kind::per_domain];
          auto& f = c.by[monitor_kind::floor];
          double ideal = latency ? double(w.domains * w.vcpus) / (latency * 1e-6) : 0;
          md += fmt::format(
            "| {} | {:.0f} | {:.0f} | {:.0f} | {:.0f} | {:.2f} | {:.2f} | {:.2f} "
            "| {:.2f} / {:.2f} / {:.2f} | {} | {} |\n",
            w.describe(), e.events_per_second, l.events_per_second, p.events_per_second,
            f.events_per_second, c.paired_ratio(monitor_kind::engine, monitor_kind::loop),
            c.paired_ratio(monitor_kind::engine, monitor_kind::per_domain),
            c.paired_ratio(monitor_kind::floor, monitor_kind::loop), e.cpu_us, l.cpu_us, p.cpu_us,
            ideal ? fmt::format("{:.0f}% / {:.0f}%", 100 * e.events_per_second / ideal,
                                100 * l.events_per_second / ideal)
                  : std::string("–"),
            c.exact ? "yes" : "**no**");
          out.exact &= c.exact;
        }

  // Latency at a given load, under the 15 µs model.
  workload probe;
  probe.duration = std::chrono::milliseconds(opts.run_ms);
  auto capacity = compare(probe, {1, opts.run_ms}).by[monitor_kind::floor].events_per_second;
  md += fmt::format(
    "\n## Added latency at load (15 µs exit model, fast step-over, 5 breakpoints)\n\n"
    "Load: VCPUs × (1 / 15 µs) as a share of the floor's capacity on this machine "
    "({:.0f} events/s with no exit latency), spread over 4 domains.\n\n"
    "| load | VCPUs | monitor | events/s | A p50 / p99 / p99.9 µs | B p50 / p99 / p99.9 µs |\n"
    "|---|---:|---|---:|---|---|\n",
    capacity);
  for (double load : {0.25, 0.5, 0.9}) {
    workload w;
    auto vcpus = std::max<uint32_t>(4, uint32_t(load * capacity * 15e-6 + 0.5));
    w.domains = 4;
    w.vcpus = (vcpus + 3) / 4;
    w.exit_latency = std::chrono::microseconds(15);
    w.duration = std::chrono::milliseconds(opts.run_ms);
    auto c = compare(w, opts);
    print_row(w, c);
    out.exact &= c.exact;
    for (auto k : all_monitors) {
      auto& s = c.by[k];
      md += fmt::format(
        "| {:.0f}% | {} | {} | {:.0f} | {:.2f} / {:.2f} / {:.2f} | {:.2f} / {:.2f} / {:.2f} |\n",
        load * 100, w.domains * w.vcpus, to_string(k), s.events_per_second, us(s.a, 0.5),
        us(s.a, 0.99), us(s.a, 0.999), us(s.b, 0.5), us(s.b, 0.99), us(s.b, 0.999));
    }
  }

  // Isolation: a slow handler in one domain.
  {
    workload w;
    w.domains = 16;
    w.vcpus = 2;
    w.exit_latency = std::chrono::microseconds(15);
    w.duration = std::chrono::milliseconds(opts.run_ms);
    monitor_options spin, sleep;
    spin.slow_handler = sleep.slow_handler = std::chrono::microseconds(100);
    sleep.slow_handler_sleeps = true;
    auto base = compare(w, opts);
    auto spun = compare(w, opts, spin);
    auto slept = compare(w, opts, sleep);
    out.exact &= base.exact && spun.exact && slept.exact;
    md += fmt::format(
      "\n## Isolation: a 100 µs handler in one domain ({})\n\n"
      "Every hit in domain 0 runs a handler that holds its VCPU 100 µs, spinning or sleeping "
      "(vmitap: a hit handler, on its own thread; the loops: inline, as a plugin callback runs). "
      "The other 15 domains' events/s and A p99, and their ratio to the same monitor's run "
      "without the handler. A spinning handler shares the monitor's CPUs (here: {}) with "
      "everything else the monitor runs; vmitap's runs at nice 10, below its pollers.\n\n"
      "| monitor | others' events/s without | spinning | ÷ without | sleeping | ÷ without | "
      "others' A p99 µs without / spinning / sleeping |\n|---|---:|---:|---:|---:|---:|---|\n",
      w.describe(), monitor_cpus());
    for (auto k : {monitor_kind::engine, monitor_kind::loop, monitor_kind::per_domain}) {
      auto& b = base.by[k];
      auto& p = spun.by[k];
      auto& q = slept.by[k];
      md += fmt::format("| {} | {:.0f} | {:.0f} | {} | {:.0f} | {} | {:.2f} / {:.2f} / {:.2f} |\n",
                        to_string(k), b.others_per_second, p.others_per_second,
                        ratio(p.others_per_second, b.others_per_second), q.others_per_second,
                        ratio(q.others_per_second, b.others_per_second), us(b.others_a, 0.99),
                        us(p.others_a, 0.99), us(q.others_a, 0.99));
      std::printf("isolation %s: others %.0f / %.0f spinning / %.0f sleeping events/s\n",
                  to_string(k), b.others_per_second, p.others_per_second, q.others_per_second);
    }
  }

  // Breakpoints at scale.
  md +=
    "\n## Breakpoints at scale\n\nArming through the whole engine (config → registry → "
    "one batched read and one batched write per view), then a stop that restores every page. "
    "Driver calls are the sim's counts (on Xen a batched read is one hypercall per page: "
    "Xen 4.17 has no batched read). Heap: malloc'd bytes held once every breakpoint is "
    "armed, per breakpoint: *all* counts everything the monitored domains hold, *own* "
    "only what the breakpoints add to the same domains monitored without any.\n\n"
    "| breakpoints | domains | arm | driver calls (read / write / views) | teardown "
    "| heap per breakpoint all / own | clean |\n|---:|---:|---:|---|---:|---:|---|\n";
  for (auto [domains, bps] : {std::pair{1u, 10000u}, std::pair{100u, 100u}, std::pair{1u, 100000u},
                              std::pair{100u, 1000u}, std::pair{64u, 1000u}}) {
    auto s = run_scale(domains, bps);
    auto bare = run_scale(domains, 0, 1, bps);
    std::printf("scale %u x %u: arm %.3f s teardown %.3f s\n", domains, bps, s.arm_seconds,
                s.teardown_seconds);
    md += fmt::format("| {} | {} | {:.3f} s | {} / {} / {} | {:.3f} s | {:.0f} / {:.0f} B | {} |\n",
                      uint64_t(domains) * bps, domains, s.arm_seconds, s.get_calls, s.set_calls,
                      s.view_calls, s.teardown_seconds, s.heap_per_breakpoint,
                      (s.heap_bytes - bare.heap_bytes) / (double(domains) * bps),
                      s.exact && bare.exact ? "yes" : "**no**");
    out.exact &= s.exact && bare.exact;
  }
  // A domain's and a VCPU's own cost, as slopes (the engine's own heap cancels out): 16 and
  // 64 domains without breakpoints of 1 VCPU, and 64 of 8 VCPUs.
  constexpr uint32_t domains = 64, fewer = 16;
  auto few = run_scale(fewer, 0, 1);
  auto one = run_scale(domains, 0, 1);
  auto eight = run_scale(domains, 0, 8);
  md += fmt::format(
    "\nA monitored domain without breakpoints holds {:.1f} KiB of heap with 1 "
    "VCPU, and each further VCPU {:.1f} KiB (slopes between {} and {} domains of 1 "
    "VCPU and {} of 8; the simulated hypervisor's share of a session, its ring "
    "and views, included).\n",
    (one.heap_bytes - few.heap_bytes) / (domains - fewer) / 1024,
    (eight.heap_bytes - one.heap_bytes) / (domains * 7.0) / 1024, fewer, domains, domains);
  out.exact &= few.exact && one.exact && eight.exact;

  auto profile = profile_load_section();
  md += profile.markdown;
  out.exact &= profile.ok;

  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  md += fmt::format("\nPeak RSS of the whole benchmark process: {} MiB. The suite took {:.0f} s.\n",
                    ru.ru_maxrss / 1024,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return out;
}

}  // namespace vmitap::bench
