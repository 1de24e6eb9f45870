// vmitap-bench: the engine against a baseline on the same simulated workload, side by side in
// one run. The baseline is the classic single-threaded VMI event loop (as LibVMI or DRAKVUF
// run it): the hypervisor's thread decides and answers each event itself, no actors. Both
// count hits exactly; the table reports medians of alternating runs and their ratio.

#include "drivers/sim/sim_driver.hpp"
#include "engine/demo.hpp"
#include "engine/error.hpp"

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sys/resource.h>
#include <thread>
#include <unordered_map>

using namespace vmitap;
using clock_type = std::chrono::steady_clock;

namespace {

struct run_result {
  double seconds = 0;
  uint64_t events = 0;
  bool exact = false;
  double events_per_second() const { return double(events) / seconds; }
};

struct workload {
  uint32_t domains = 4;
  uint32_t vcpus = 2;
  uint64_t instructions = 400000;
  step_mode mode = step_mode::fast;
};

std::vector<std::shared_ptr<sim::domain>> make_domains(sim::hypervisor& hv, const workload& w,
                                                       engine_config& cfg) {
  std::vector<std::shared_ptr<sim::domain>> doms;
  for (uint32_t i = 0; i < w.domains; ++i) {
    sim::domain_config dc;
    dc.name = "bench-" + std::to_string(i);
    dc.vcpus = w.vcpus;
    dc.instructions_per_vcpu = w.instructions;
    dc.workload.seed = 7 + i;
    doms.push_back(hv.create_domain(dc));
    cfg.domains.push_back(demo_entry(*doms.back(), w.mode, false));
  }
  return doms;
}

void wait_halted(const std::vector<std::shared_ptr<sim::domain>>& doms) {
  for (auto& d : doms)
    while (!d->halted())
      std::this_thread::sleep_for(std::chrono::microseconds(200));
}

run_result run_engine(const workload& w) {
  auto hv = std::make_shared<sim::hypervisor>();
  engine_config cfg;
  cfg.metrics_listen = "";
  auto doms = make_domains(*hv, w, cfg);
  engine eng{cfg, std::make_shared<sim::sim_driver>(hv)};
  auto t0 = clock_type::now();
  if (auto err = eng.start()) {
    spdlog::error("engine: {}", render(err));
    return {};
  }
  wait_halted(doms);
  auto t1 = clock_type::now();
  auto reports = eng.stop();
  run_result r;
  r.seconds = std::chrono::duration<double>(t1 - t0).count();
  for (auto& rep : reports)
    r.events += rep.totals.events;
  auto* devnull = std::fopen("/dev/null", "w");
  r.exact = verify_and_print(*hv, reports, doms.size(), devnull);
  std::fclose(devnull);
  return r;
}

/// The single-threaded loop: decide and answer inside the event callback.
run_result run_baseline(const workload& w) {
  auto hv = std::make_shared<sim::hypervisor>();
  engine_config cfg;
  auto doms = make_domains(*hv, w, cfg);
  sim::sim_driver driver{hv};
  struct monitored {
    std::unique_ptr<drv::domain_session> session;
    drv::view_id view = 0;
    std::unordered_map<uint64_t, uint64_t> hits;  // pa → count
    std::unordered_map<uint64_t, uint32_t> pages;  // gfn → breakpoints
    bool stepping = false;
    uint64_t events = 0;
  };
  std::vector<std::unique_ptr<monitored>> ms;
  auto t0 = clock_type::now();
  for (size_t i = 0; i < doms.size(); ++i) {
    auto m = std::make_unique<monitored>();
    m->session = std::move(*driver.attach(doms[i]->id()));
    m->session->pause();
    m->view = *m->session->create_view(drv::page_access::rwx);
    m->session->switch_all(m->view);
    std::vector<drv::access_change> changes;
    for (auto& bp : cfg.domains[i].plan.breakpoints) {
      m->hits[bp.pa] = 0;
      if (m->pages[drv::gfn_of(bp.pa)]++ == 0)
        changes.push_back({drv::gfn_of(bp.pa), drv::page_access::rw});
    }
    m->session->set_access(m->view, changes);
    auto* mp = m.get();
    drv::event_handlers h;
    for (uint32_t v = 0; v < w.vcpus; ++v)
      h.per_vcpu.push_back([mp, mode = w.mode](const drv::event& ev) {
        ++mp->events;
        auto rsp = drv::make_response(ev);
        if (ev.reason == drv::event_reason::singlestep) {
          rsp.flags |= drv::flag::alternate_p2m | drv::flag::toggle_singlestep;
          rsp.view = mp->view;
        } else {
          if (auto hit = mp->hits.find(drv::pa_of(ev.mem.gfn, ev.mem.offset)); hit != mp->hits.end())
            ++hit->second;
          rsp.flags |= drv::flag::alternate_p2m;
          rsp.view = 0;
          if (mode == step_mode::fast) {
            rsp.flags |= drv::flag::fast_singlestep;
            rsp.fast_return_view = mp->view;
          } else {
            rsp.flags |= drv::flag::toggle_singlestep;
          }
        }
        mp->session->respond(rsp);
      });
    h.orphan = [mp](const drv::event& ev) { mp->session->respond(drv::make_response(ev)); };
    m->session->start_events(std::move(h));
    m->session->resume();
    ms.push_back(std::move(m));
  }
  wait_halted(doms);
  auto t1 = clock_type::now();
  run_result r;
  r.seconds = std::chrono::duration<double>(t1 - t0).count();
  r.exact = true;
  for (size_t i = 0; i < doms.size(); ++i) {
    r.events += ms[i]->events;
    for (auto& [pa, n] : ms[i]->hits)
      r.exact &= n == doms[i]->executions(pa, ms[i]->view);
    ms[i]->session->detach();
  }
  return r;
}

double median(std::vector<double> xs) {
  std::sort(xs.begin(), xs.end());
  return xs[xs.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"vmitap-bench: engine vs. single-threaded baseline on the simulated hypervisor"};
  std::string markdown;
  int repetitions = 5;
  workload base;
  app.add_option("--markdown", markdown, "write the results table to this file");
  app.add_option("--repetitions", repetitions, "alternating runs per configuration");
  app.add_option("--instructions", base.instructions, "instructions per VCPU");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);

  struct row {
    std::string name;
    workload w;
    double engine_eps = 0, baseline_eps = 0, engine_us = 0, baseline_us = 0;
    bool exact = true;
  };
  std::vector<row> rows;
  for (auto mode : {step_mode::fast, step_mode::classic})
    for (uint32_t domains : {1u, 4u}) {
      row r;
      r.w = base;
      r.w.mode = mode;
      r.w.domains = domains;
      r.name = std::to_string(domains) + " domain(s) x " + std::to_string(r.w.vcpus) + " VCPUs, "
               + to_string(mode);
      std::vector<double> e, b;
      for (int i = 0; i < repetitions; ++i) {  // alternate so drift hits both alike
        auto er = run_engine(r.w);
        auto br = run_baseline(r.w);
        r.exact &= er.exact && br.exact;
        e.push_back(er.events_per_second());
        b.push_back(br.events_per_second());
      }
      r.engine_eps = median(e);
      r.baseline_eps = median(b);
      r.engine_us = 1e6 / r.engine_eps;
      r.baseline_us = 1e6 / r.baseline_eps;
      std::printf("%-32s engine %10.0f ev/s  baseline %10.0f ev/s  ratio %.2f  %s\n",
                  r.name.c_str(), r.engine_eps, r.baseline_eps, r.engine_eps / r.baseline_eps,
                  r.exact ? "exact" : "NOT EXACT");
      rows.push_back(r);
    }
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  std::string table =
    "| workload | vmitap engine (events/s) | baseline loop (events/s) | engine / baseline | "
    "engine µs per event (wall) | hits exact |\n|---|---:|---:|---:|---:|---|\n";
  bool all_exact = true;
  for (auto& r : rows) {
    char line[256];
    std::snprintf(line, sizeof line, "| %s | %.0f | %.0f | %.2f | %.2f | %s |\n", r.name.c_str(),
                  r.engine_eps, r.baseline_eps, r.engine_eps / r.baseline_eps, r.engine_us,
                  r.exact ? "yes" : "NO");
    table += line;
    all_exact &= r.exact;
  }
  char footer[256];
  std::snprintf(footer, sizeof footer,
                "\nMedians of %d alternating runs, %llu instructions per VCPU; peak RSS of the "
                "bench process %ld MiB.\n",
                repetitions, (unsigned long long) base.instructions, ru.ru_maxrss / 1024);
  if (!markdown.empty()) {
    std::ofstream out(markdown);
    out << "# Benchmarks\n\nProduced by `make bench` (`bench/bench.cpp`) on this project's "
           "machine kind (2 cores, Debian 12), Release build.\n\n"
        << "The baseline is the classic single-threaded VMI loop: the hypervisor's thread "
           "decides and answers each event itself (as LibVMI/DRAKVUF event loops do). The "
           "engine is vmitap with its actors (2 scheduler threads). Both run the same simulated "
           "guests (the demo's breakpoints) and both are checked against ground truth. The "
           "simulated guest's own work is part of every event's cost, so the absolute figures "
           "bound the engine from below; the ratio is what the actor design costs or gains.\n\n"
        << table << footer;
  }
  std::printf("%s", footer);
  return all_exact ? 0 : 1;
}
