#include "bench/harness.hpp"

#include "drivers/error.hpp"

#include <spdlog/spdlog.h>

#include <pthread.h>
#include <sched.h>
#include <thread>

namespace vmitap::bench {

namespace {

/// Where the threads the calling thread starts may run: threads inherit their creator's
/// CPUs. The simulated hardware gets the last CPU, the monitor the others, as on Xen, where
/// guest VCPUs and dom0's monitor never share a CPU. On one CPU nothing is split.
class cpu_split {
public:
  cpu_split() { known_ = pthread_getaffinity_np(pthread_self(), sizeof all_, &all_) == 0; }
  ~cpu_split() {
    if (known_)
      pthread_setaffinity_np(pthread_self(), sizeof all_, &all_);
  }
  void for_guests() { apply(true); }
  void for_monitor() { apply(false); }
  /// CPUs the monitor's threads may use.
  int monitor_cpus() const {
    int n = known_ ? CPU_COUNT(&all_) : int(std::thread::hardware_concurrency());
    return n < 2 ? n : n - 1;
  }

private:
  void apply(bool guests) {
    if (!known_ || CPU_COUNT(&all_) < 2)
      return;
    int last = -1;
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &all_))
        last = c;
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &all_) && (c == last) == guests)
        CPU_SET(c, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
  }

  cpu_set_t all_{};
  bool known_ = false;
};

}  // namespace

int monitor_cpus() {
  return cpu_split{}.monitor_cpus();
}

std::string workload::describe() const {
  auto latency = std::chrono::duration_cast<std::chrono::microseconds>(exit_latency).count();
  return fmt::format("{}×{}, {} bps, {}{}", domains, vcpus, breakpoints, to_string(mode),
                     latency ? fmt::format(", {} µs exits", latency) : std::string());
}

plan_ptr spread_plan(const sim::program& code, uint32_t count, step_mode mode) {
  auto plan = std::make_shared<domain_plan>();
  plan->mode = mode;
  auto fns = code.functions();
  if (count <= fns.size()) {
    for (uint32_t i = 0; i < count; ++i)  // the hottest function entries
      plan->breakpoints.push_back(breakpoint_def::at(fmt::format("fn{}", i), fns[i].entry_pa));
    return plan;
  }
  auto step = std::max<size_t>(1, code.size() / count);
  for (size_t i = 0; i < code.size() && plan->breakpoints.size() < count; i += step)
    plan->breakpoints.push_back(breakpoint_def::at(fmt::format("i{}", i), code.at(uint32_t(i)).pa));
  return plan;
}

run_result run_once(monitor_kind kind, const workload& w, const monitor_options& opts) {
  sim::hypervisor_config hc;
  hc.exit_latency = w.exit_latency;
  hc.spin = w.guest_spin;
  cpu_split cpus;
  cpus.for_guests();
  auto hv = std::make_shared<sim::hypervisor>(hc);
  cpus.for_monitor();
  std::vector<domain_spec> specs;
  for (uint32_t i = 0; i < w.domains; ++i) {
    sim::domain_config dc;
    dc.name = fmt::format("bench-{}", i);
    dc.vcpus = w.vcpus;
    dc.workload.seed = 7 + i;
    dc.workload.functions = std::max<uint32_t>(48, w.breakpoints / 8);
    auto dom = *hv->create_domain(dc);
    specs.push_back({dom, spread_plan(dom->code(), w.breakpoints, w.mode)});
  }
  auto doms = specs;
  auto m = make_monitor(kind, hv, std::move(specs), opts);
  if (auto err = m->start()) {
    spdlog::error("{}: {}", to_string(kind), render(err));
    return {};
  }
  auto others_raised = [&] {
    uint64_t n = 0;
    for (size_t i = 1; i < doms.size(); ++i)
      n += doms[i].dom->check().requests_raised;
    return n;
  };
  // Latencies, as events, count within the measured window only: attach and detach are
  // not the steady state the figures describe, for any monitor.
  auto latencies = [&] {
    std::vector<std::pair<sim::latency_histogram, sim::latency_histogram>> all;
    for (auto& d : doms)
      all.emplace_back(d.dom->response_latency(), d.dom->resume_lateness());
    return all;
  };
  auto latencies0 = latencies();
  auto others0 = others_raised();
  auto events0 = m->events();
  auto cpu0 = m->tool_cpu();
  auto t0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(w.duration);
  run_result r;
  r.events = m->events() - events0;
  r.others_events = others_raised() - others0;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto cpu = m->tool_cpu() - cpu0;
  auto latencies1 = latencies();
  r.tool_cpu_us =
    r.events ? std::chrono::duration<double, std::micro>(cpu).count() / double(r.events) : 0;
  r.exact = m->stop_and_verify();
  for (size_t i = 0; i < doms.size(); ++i) {
    auto& [response, lateness] = latencies1[i];
    response.subtract(latencies0[i].first);
    lateness.subtract(latencies0[i].second);
    r.response.merge(response);
    r.lateness.merge(lateness);
    if (i > 0)
      r.others_response.merge(response);
  }
  return r;
}

}  // namespace vmitap::bench
