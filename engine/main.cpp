// vmitap entry point. Until the actor engine lands, `vmitap run` drives the simulated
// hypervisor with a plain in-thread responder and checks what it saw against ground truth.

#include "drivers/sim/sim_driver.hpp"
#include "engine/error.hpp"

#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

using namespace vmitap;

namespace {

int run_demo() {
  auto hv = std::make_shared<sim::hypervisor>();
  sim::sim_driver driver{hv};
  struct monitored {
    std::shared_ptr<sim::domain> dom;
    std::unique_ptr<drv::domain_session> session;
    drv::view_id view = 0;
    std::vector<uint64_t> breakpoints;
    std::map<uint64_t, uint64_t> hits;
    std::mutex mutex;
  };
  std::vector<std::unique_ptr<monitored>> doms;
  for (int d = 0; d < 2; ++d) {
    sim::domain_config cfg;
    cfg.name = "demo-" + std::to_string(d);
    cfg.vcpus = 2;
    cfg.instructions_per_vcpu = 200000;
    cfg.workload.seed = 100 + d;
    auto m = std::make_unique<monitored>();
    m->dom = hv->create_domain(cfg);
    auto session = driver.attach(m->dom->id());
    if (!session) {
      std::fprintf(stderr, "attach: %s\n", render(session.error()).c_str());
      return 1;
    }
    m->session = std::move(*session);
    m->view = *m->session->create_view(drv::page_access::rwx);
    m->session->switch_all(m->view);
    for (int f = 0; f < 4; ++f)
      m->breakpoints.push_back(m->dom->code().functions()[f].entry_pa);
    std::vector<drv::access_change> changes;
    for (auto pa : m->breakpoints)
      changes.push_back({drv::gfn_of(pa), drv::page_access::rw});
    m->session->set_access(m->view, changes);
    auto* mp = m.get();
    drv::event_handlers h;
    for (uint32_t v = 0; v < cfg.vcpus; ++v)
      h.per_vcpu.push_back([mp](const drv::event& ev) {
        auto rsp = drv::make_response(ev);
        auto pa = drv::pa_of(ev.mem.gfn, ev.mem.offset);
        {
          std::lock_guard g{mp->mutex};
          for (auto bp : mp->breakpoints)
            mp->hits[bp] += bp == pa;
        }
        rsp.flags |= drv::flag::alternate_p2m | drv::flag::fast_singlestep;
        rsp.view = 0;
        rsp.fast_return_view = mp->view;
        mp->session->respond(rsp);
      });
    h.orphan = [mp](const drv::event& ev) { mp->session->respond(drv::make_response(ev)); };
    m->session->start_events(std::move(h));
    doms.push_back(std::move(m));
  }
  for (auto& m : doms)
    while (!m->dom->halted())
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
  bool ok = true;
  for (auto& m : doms) {
    std::printf("domain %s\n", m->dom->info().name.c_str());
    for (auto pa : m->breakpoints) {
      auto truth = m->dom->executions(pa, m->view);
      std::printf("  breakpoint pa=%#llx hits=%llu ground-truth=%llu %s\n",
                  (unsigned long long) pa, (unsigned long long) m->hits[pa],
                  (unsigned long long) truth, m->hits[pa] == truth ? "ok" : "MISMATCH");
      ok &= m->hits[pa] == truth;
    }
    m->session->pause();
    std::vector<drv::access_change> restore;
    for (auto pa : m->breakpoints)
      restore.push_back({drv::gfn_of(pa), drv::page_access::rwx});
    m->session->set_access(m->view, restore);
    m->session->switch_all(0);
    m->session->destroy_view(m->view);
    m->session->detach();
    auto inv = m->dom->check();
    std::printf("  requests raised=%llu answered=%llu paused vcpus=%llu pages changed=%llu\n",
                (unsigned long long) inv.requests_raised,
                (unsigned long long) inv.requests_answered,
                (unsigned long long) inv.paused_vcpus, (unsigned long long) inv.pages_changed);
    ok &= inv.holds();
  }
  std::printf("%s\n", ok ? "verified: hits equal ground truth, invariants hold" : "FAILED");
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "run") == 0)
    return run_demo();
  std::fprintf(stderr, "usage: vmitap run\n");
  return 2;
}
