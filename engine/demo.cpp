#include "engine/demo.hpp"

#include "drivers/sim/sim_driver.hpp"
#include "engine/error.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <atomic>
#include <csignal>
#include <thread>

namespace vmitap {

namespace {

std::atomic<bool> stop_requested{false};
std::atomic<bool> reload_requested{false};

void on_signal(int) {
  stop_requested = true;
}

void on_hangup(int) {
  reload_requested = true;
}

struct demo_domain {
  const char* name;
  uint32_t vcpus;
  step_mode mode;
  bool two_views;
};

constexpr demo_domain demo_domains[] = {
  {"web-1", 2, step_mode::fast, false},
  {"web-2", 2, step_mode::fast, true},
  {"db-1", 4, step_mode::classic, false},
  {"build-1", 1, step_mode::fast, false},
};

}  // namespace

engine_config::domain_entry demo_entry(sim::domain& dom, step_mode mode, bool two_views) {
  auto& code = dom.code();
  engine_config::domain_entry entry;
  entry.select.name = dom.info().name;
  entry.plan.mode = mode;
  if (two_views) {
    entry.plan.views = {"main", "shadow"};
    entry.plan.vcpu_views[1] = "shadow";
  }
  auto fn = code.functions();
  auto add = [&](std::string name, uint64_t pa, std::string view, std::string tag) {
    entry.plan.breakpoints.push_back({std::move(name), pa, std::move(view), {std::move(tag)}});
  };
  add("fn0_entry", fn[0].entry_pa, "main", "entry");
  add("fn1_entry", fn[1].entry_pa, "main", "entry");
  add("fn2_entry", fn[2].entry_pa, "main", "entry");
  add("fn0_body", code.at(fn[0].first + fn[0].count / 2).pa, "main", "body");
  add("fn5_entry", fn[5].entry_pa, "main", "entry");
  if (two_views)
    add("fn0_entry_shadow", fn[0].entry_pa, "shadow", "entry");
  return entry;
}

engine_config demo_topology(sim::hypervisor& hv, const demo_options& opt) {
  engine_config cfg;
  cfg.worker_threads = opt.worker_threads;
  cfg.metrics_listen = opt.metrics_listen;
  if (!opt.hits_path.empty())
    cfg.sinks.push_back({"hits", sink_config::kind::jsonl_file, opt.hits_path, 0,
                         defaults::sink_queue_bound});
  uint64_t seed = 1;
  for (auto& d : demo_domains) {
    sim::domain_config dc;
    dc.name = d.name;
    dc.vcpus = d.vcpus;
    dc.instructions_per_vcpu = opt.instructions_per_vcpu;
    dc.workload.seed = seed++;
    auto entry = demo_entry(*hv.create_domain(dc), d.mode, d.two_views);
    if (!opt.hits_path.empty())
      entry.sinks = {"hits"};
    cfg.domains.push_back(std::move(entry));
  }
  return cfg;
}

bool verify_and_print(sim::hypervisor& hv, const std::vector<domain_report>& reports,
                      size_t expected, std::FILE* out) {
  bool ok = reports.size() == expected;
  if (!ok)
    std::fprintf(out, "\n%zu of %zu domains reported\n", reports.size(), expected);
  std::fprintf(out, "\n%-9s %-17s %6s %10s %10s %12s  %s\n", "domain", "breakpoint", "view",
               "pa", "hits", "ground-truth", "");
  std::map<drv::domain_id, size_t> sessions;
  for (auto& r : reports)
    ++sessions[r.id];
  for (auto& r : reports) {
    auto dom = hv.find(r.id);
    if (!r.error.empty()) {
      std::fprintf(out, "%-9s error: %s\n", r.name.c_str(), r.error.c_str());
      ok = false;
    }
    for (auto& bp : r.breakpoints) {
      uint64_t hits = bp->hits->load();
      // Reached, not only retired: a VCPU stopped mid-step at detach has been hit already.
      uint64_t truth = dom ? dom->reached(bp->spec.pa, bp->spec.view) : 0;
      bool exact = dom && hits == truth;
      // Armed for only part of the run (a reload added it, or re-attached its domain):
      // ground truth counts the whole run, so there is nothing exact to compare with.
      bool partial = bp->spec.live || sessions[r.id] > 1;
      ok &= exact || r.died || partial;
      std::fprintf(out, "%-9s %-17s %6u %#10llx %10llu %12llu  %s\n", r.name.c_str(),
                   bp->spec.name.c_str(), unsigned(bp->spec.view), (unsigned long long) bp->spec.pa,
                   (unsigned long long) hits, (unsigned long long) truth,
                   exact     ? "exact"
                   : partial ? "armed part of the run (reload)"
                   : r.died  ? "domain died"
                             : "MISMATCH");
    }
  }
  std::fprintf(out, "\n%-9s %10s %10s %10s %10s %8s %8s %8s %9s %8s\n", "domain", "raised",
               "answered", "events", "hits", "nbrs", "stale", "paused", "changed", "calls");
  for (auto& r : reports) {
    auto dom = hv.find(r.id);
    if (!dom) {
      std::fprintf(out, "%-9s (gone)\n", r.name.c_str());
      continue;
    }
    auto inv = dom->check();
    ok &= inv.holds() && inv.answered_by_detach == 0 && r.totals.respond_failures == 0;
    std::fprintf(out, "%-9s %10llu %10llu %10llu %10llu %8llu %8llu %8llu %9llu %8llu\n",
                 r.name.c_str(), (unsigned long long) inv.requests_raised,
                 (unsigned long long) inv.requests_answered, (unsigned long long) r.totals.events,
                 (unsigned long long) r.totals.hits, (unsigned long long) r.totals.neighbours,
                 (unsigned long long) r.totals.stale, (unsigned long long) inv.paused_vcpus,
                 (unsigned long long) inv.pages_changed, (unsigned long long) r.access_calls);
  }
  std::fprintf(out, "\n%s\n",
               ok ? "verified: every breakpoint's hits equal ground truth; requests answered = "
                    "raised, VCPUs left paused = 0, pages changed = 0"
                  : "NOT VERIFIED: see the rows above");
  return ok;
}

int run_on_sim(std::shared_ptr<sim::hypervisor> hv, const engine_config& cfg,
               std::chrono::seconds max_duration, const std::string& title,
               config_reader reload) {
  size_t selected = 0;  // every selected domain must report
  for (auto& d : hv->domains())
    selected += std::any_of(cfg.domains.begin(), cfg.domains.end(),
                            [&](auto& e) { return e.select.matches(d->info()); });
  // Before start-up: a signal that arrives while domains attach must not kill vmitap.
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  if (reload)
    std::signal(SIGHUP, on_hangup);
  engine eng{cfg, std::make_shared<sim::sim_driver>(hv)};
  if (auto err = eng.start()) {
    spdlog::error("start: {}", render(err));
    return 2;
  }
  auto t0 = std::chrono::steady_clock::now();
  uint64_t last_events = 0, last_hits = 0;
  auto last = t0;
  std::printf("%s\n", title.c_str());
  if (eng.metrics_port() != 0)
    std::printf("metrics: http://%s:%d/metrics\n",
                cfg.metrics_listen.substr(0, cfg.metrics_listen.rfind(':')).c_str(),
                eng.metrics_port());
  std::fflush(stdout);
  for (;;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    bool all_halted = true;
    for (auto& d : hv->domains())
      all_halted &= d->halted();
    if (reload && reload_requested.exchange(false)) {
      if (auto next = reload(); !next) {
        spdlog::error("reload rejected, the running configuration stays:\n{}",
                      context_of(next.error()));
      } else if (auto err = eng.reload(std::move(*next))) {
        spdlog::error("reload: {}", render(err));
      } else {
        spdlog::info("reload applied");
      }
    }
    auto now = std::chrono::steady_clock::now();
    bool done = all_halted || stop_requested || now - t0 > max_duration;
    if (now - last < std::chrono::seconds(1) && !done)
      continue;
    uint64_t events = 0, hits = 0;
    std::string per_domain;
    for (auto& r : eng.status()) {
      events += r.totals.events;
      hits += r.totals.hits;
      per_domain += " | " + r.name + " " + std::to_string(r.totals.events) + "ev "
                    + std::to_string(r.totals.hits) + "hits";
    }
    double dt = std::chrono::duration<double>(now - last).count();
    std::printf("t=%5.1fs  %9.0f events/s  %8.0f hits/s%s\n",
                std::chrono::duration<double>(now - t0).count(), (events - last_events) / dt,
                (hits - last_hits) / dt, per_domain.c_str());
    std::fflush(stdout);
    last_events = events;
    last_hits = hits;
    last = now;
    if (done)
      break;
  }
  auto elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto reports = eng.stop();
  uint64_t events = 0;
  for (auto& r : reports)
    events += r.totals.events;
  std::printf("\n%llu events in %.2f s: %.0f events/s%s\n", (unsigned long long) events, elapsed,
              events / elapsed, stop_requested ? " (stopped by signal)" : "");
  return verify_and_print(*hv, reports, selected, stdout) ? 0 : 1;
}

int run_demo(const demo_options& opt) {
  auto hv = std::make_shared<sim::hypervisor>(
    sim::hypervisor_config{.threaded = true, .slice_instructions = 512,
                           .exit_latency = opt.exit_latency});
  auto cfg = demo_topology(*hv, opt);
  char title[128];
  std::snprintf(title, sizeof title, "vmitap demo: %zu simulated domains, %llu instructions per VCPU",
                std::size(demo_domains), (unsigned long long) opt.instructions_per_vcpu);
  return run_on_sim(hv, cfg, opt.max_duration, title);
}

}  // namespace vmitap
