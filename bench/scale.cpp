#include "bench/scale.hpp"

#include "drivers/error.hpp"
#include "drivers/sim/sim_driver.hpp"
#include "engine/engine.hpp"

#include <malloc.h>
#include <spdlog/spdlog.h>

#include <thread>

namespace vmitap::bench {

namespace {

size_t heap_in_use() {
  auto m = mallinfo2();
  return m.uordblks + m.hblkhd;
}

}  // namespace

scale_result run_scale(uint32_t domains, uint32_t breakpoints, uint32_t vcpus, uint32_t sized_for) {
  sim::hypervisor_config hc;
  auto hv = std::make_shared<sim::hypervisor>(hc);
  engine_config cfg;
  cfg.metrics_listen = "";
  cfg.pollers = 1;
  std::vector<std::shared_ptr<sim::domain>> doms;
  uint32_t pages = (std::max(breakpoints, sized_for) + 3) / 4;
  for (uint32_t d = 0; d < domains; ++d) {
    sim::domain_config dc;
    dc.name = fmt::format("scale-{}", d);
    dc.vcpus = vcpus;
    dc.memory_mib = std::max<uint64_t>(64, (uint64_t(pages) * 2 * 4096 >> 20) + 16);
    dc.workload.seed = 1 + d;
    doms.push_back(*hv->create_domain(dc));
    auto plan = std::make_shared<domain_plan>();
    plan->breakpoints.reserve(breakpoints);
    // Four per page on data pages far from the code: arming is what is measured.
    auto base = drv::gfn_of(drv::pa_of(dc.memory_mib * 256 / 2));
    for (uint32_t i = 0; i < breakpoints; ++i)
      plan->breakpoints.push_back(
        breakpoint_def::at(fmt::format("b{}", i), drv::pa_of(base + i / 4, (i % 4) * 16)));
    engine_config::domain_entry e;
    e.select.id = doms.back()->id();
    e.plan = std::move(plan);
    cfg.domains.push_back(std::move(e));
  }
  auto calls = [&] {
    sim::call_counts c;
    for (auto& d : doms) {
      auto x = d->calls();
      c.get_access += x.get_access;
      c.set_access += x.set_access;
      c.views += x.views;
    }
    return c;
  };
  scale_result r;
  auto heap0 = heap_in_use();
  engine eng{cfg, std::make_shared<sim::sim_driver>(hv)};
  auto t0 = std::chrono::steady_clock::now();
  if (auto err = eng.start()) {
    spdlog::error("scale: {}", render(err));
    return r;
  }
  while (eng.counters().domains_monitored.load() + int64_t(eng.counters().attach_failed.get()) <
         int64_t(domains))
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  r.arm_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto c = calls();
  r.get_calls = c.get_access;
  r.set_calls = c.set_access;
  r.view_calls = c.views;
  r.heap_bytes = double(heap_in_use()) - double(heap0);
  r.heap_per_breakpoint = breakpoints ? r.heap_bytes / (double(domains) * breakpoints) : 0;
  auto t1 = std::chrono::steady_clock::now();
  auto reports = eng.stop();
  r.teardown_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  r.exact = reports.size() == domains && eng.counters().attach_failed.get() == 0;
  for (auto& rep : reports)
    r.exact &= rep.error.empty() && rep.breakpoints.size() == breakpoints;
  for (auto& d : doms)
    r.exact &= d->check().holds();
  return r;
}

}  // namespace vmitap::bench
