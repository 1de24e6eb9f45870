// The Xen driver reads VCPU registers (xc_domain_hvm_getcontext_partial) through a fake Xen
// 4.17 as the simulated guest has them, and vmitap finds the guest's kernel (Linux and
// Windows) and the process on a paused VCPU through that session alone.

#include "drivers/guest/kernel.hpp"
#include "drivers/sim/domain.hpp"
#include "drivers/sim/kernel.hpp"
#include "tests/drivers/xen_fixture.hpp"

#include <map>
#include <set>

using namespace vmitap;
using namespace vmitap::testing;
using ::testing::HasSubstr;

namespace {

class xen_kernel : public xen_driver_test,
                   public ::testing::WithParamInterface<drv::calling_convention> {
protected:
  sim::domain_config config(uint64_t seed, uint32_t vcpus) const {
    auto cfg = small_domain(vcpus, seed);
    cfg.abi = GetParam();
    cfg.processes = 3;
    return cfg;
  }

  void boot_with(const sim::domain_config& cfg) {
    auto made = hv->create_domain(cfg);
    ASSERT_TRUE(made) << render(made.error());
    dom = *made;
  }

  drv::kernel_profile profile_of(const sim::domain_config& cfg) {
    auto json = sim::kernel_profile_json(cfg);
    EXPECT_TRUE(json) << render(json.error());
    if (!json)
      return {};
    auto p = drv::parse_profile(*json, "sim.json");
    EXPECT_TRUE(p) << render(p.error());
    return p ? std::move(*p) : drv::kernel_profile{};
  }
};

TEST_P(xen_kernel, the_driver_reads_each_paused_vcpus_registers_through_xen_as_the_sim_has_them) {
  auto cfg = config(17, 3);
  boot_with(cfg);
  open();
  auto s = attach();
  ASSERT_TRUE(s);
  auto v = s->create_view(drv::page_access::rwx);
  ASSERT_TRUE(v) << render(v.error());
  view = *v;
  ASSERT_FALSE(s->switch_all(view));
  deny_execute(*s, view, dom->code());
  auto ring = s->start_events();
  ASSERT_TRUE(ring);

  // Every VCPU traps at its first fetch and waits, unanswered: its registers stay as they are.
  std::map<drv::vcpu_id, drv::event> trapped;
  std::vector<drv::event> in(8);
  while (trapped.size() < cfg.vcpus) {
    auto n = wait_and_take(**ring, in);
    ASSERT_GT(n, 0u) << "only " << trapped.size() << " VCPUs trapped";
    for (size_t i = 0; i < n; ++i)
      ASSERT_TRUE(trapped.emplace(in[i].vcpu, in[i]).second) << "a waiting VCPU trapped again";
  }

  auto& layout = dom->layout();
  auto& k = layout.kernel;
  auto lstar = k.va_of(dom->code().functions()[k.syscall_entry].entry_pa);
  xen.clear_calls();
  for (auto& [id, ev] : trapped) {
    SCOPED_TRACE("VCPU " + std::to_string(id));
    auto regs = s->vcpu_registers(id);
    ASSERT_TRUE(regs) << render(regs.error());
    // As the request Xen raised has them (the sim's own registers of the paused VCPU) ...
    EXPECT_EQ(regs->rip, ev.regs.rip);
    EXPECT_EQ(regs->rsp, ev.regs.rsp);
    EXPECT_EQ(regs->rdi, ev.regs.rdi);
    EXPECT_EQ(regs->rcx, ev.regs.rcx);
    EXPECT_EQ(regs->rflags, ev.regs.rflags);
    EXPECT_EQ(regs->cr0, ev.regs.cr0);
    EXPECT_EQ(regs->cr3, ev.regs.cr3);
    EXPECT_EQ(regs->cr4, ev.regs.cr4);
    EXPECT_EQ(regs->msr_efer, ev.regs.msr_efer);
    EXPECT_EQ(regs->msr_lstar, ev.regs.msr_lstar);
    EXPECT_EQ(regs->gs_base, ev.regs.gs_base);
    EXPECT_EQ(regs->shadow_gs, ev.regs.shadow_gs);
    EXPECT_EQ(regs->cs, ev.regs.cs);
    EXPECT_EQ(regs->ss, ev.regs.ss);
    // ... and as the sim built them: the process's cr3, the per-CPU area or KPCR, the
    // syscall entry, the kernel's code selector, the instruction it trapped at.
    EXPECT_EQ(regs->cr3, layout.processes[dom->vcpu_process(id)].cr3);
    EXPECT_EQ(regs->gs_base, k.va_of(drv::pa_of(layout.vcpus[id].percpu_gfn)));
    EXPECT_EQ(regs->msr_lstar, lstar);
    EXPECT_EQ(regs->cs.sel, 0x10);
    EXPECT_EQ(k.pa_of(regs->rip), drv::pa_of(ev.mem.gfn, ev.mem.offset));
  }
  EXPECT_THAT(xen.calls(), ::testing::Contains("xc_domain_hvm_getcontext_partial(" +
                                               std::to_string(dom->id()) + ")"));

  auto none = s->vcpu_registers(cfg.vcpus);
  ASSERT_FALSE(none);
  EXPECT_EQ(code_of(none.error()), ec::no_such_vcpu) << render(none.error());
  xen.fail_next("xc_domain_hvm_getcontext_partial", EIO);
  auto failed = s->vcpu_registers(0);
  ASSERT_FALSE(failed);
  EXPECT_THAT(render(failed.error()), HasSubstr("xc_domain_hvm_getcontext_partial"));
  EXPECT_THAT(render(failed.error()), HasSubstr("errno 5"));

  // The kernel and the processes, found through the Xen session alone.
  auto profile = profile_of(cfg);
  auto found = drv::locate_kernel(*s, profile, cfg.vcpus);
  ASSERT_TRUE(found) << render(found.error());
  if (GetParam() == drv::calling_convention::sysv)
    EXPECT_EQ(found->slide, k.slide);
  else
    EXPECT_EQ(found->image_base, k.va_of(drv::pa_of(k.image_gfn)));
  drv::page_walker walker{*s};
  for (size_t i = 0; i < k.function_names.size(); ++i) {
    auto value = profile.symbol(k.function_names[i]);
    ASSERT_TRUE(value) << k.function_names[i];
    auto t = walker.translate(found->cr3, found->va_of(*value));
    ASSERT_TRUE(t) << k.function_names[i] << ": " << drv::to_string(t.fault);
    EXPECT_EQ(t.pa, dom->code().functions()[i].entry_pa) << k.function_names[i];
  }
  for (auto& [id, ev] : trapped) {
    auto& truth = k.processes[dom->vcpu_process(id)];
    auto got = drv::process_at(walker, ev.regs, *found);
    ASSERT_TRUE(got) << render(got.error());
    EXPECT_EQ(*got, (drv::process_info{truth.pid, truth.tid(id, k.os), truth.ppid, truth.name}))
      << "VCPU " << id << ": pid " << got->pid << " tid " << got->tid << " " << got->name;
  }

  deny_execute(*s, view, dom->code(), drv::page_access::rwx);
  std::vector<drv::response> answers;
  for (auto& [id, ev] : trapped)
    answers.push_back(drv::make_response(ev));
  ASSERT_EQ((*ring)->give(answers).failed, 0u);
  ASSERT_FALSE(s->detach());
  expect_clean();
}

TEST_P(xen_kernel, the_kernel_is_found_at_attach_through_the_xen_driver_under_each_seeds_slide) {
  open();
  std::set<uint64_t> slides;
  for (uint64_t seed : {3, 11, 29}) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    auto cfg = config(seed, 2);
    cfg.name = "guest-" + std::to_string(seed);
    boot_with(cfg);
    auto s = attach();
    ASSERT_TRUE(s);
    ASSERT_FALSE(s->pause());
    auto found = drv::locate_kernel(*s, profile_of(cfg), cfg.vcpus);
    ASSERT_FALSE(s->resume());
    ASSERT_TRUE(found) << render(found.error());
    auto& k = dom->layout().kernel;
    slides.insert(k.slide);
    if (GetParam() == drv::calling_convention::sysv) {
      EXPECT_EQ(found->slide, k.slide);
      EXPECT_EQ(found->identity, k.banner);
    } else {
      EXPECT_EQ(found->image_base, k.va_of(drv::pa_of(k.image_gfn)));
      EXPECT_THAT(found->identity, HasSubstr(k.pdb.guid + " age " + std::to_string(k.pdb.age)));
    }
    ASSERT_FALSE(s->detach());
    expect_clean();
  }
  EXPECT_GT(slides.size(), 1u);
}

INSTANTIATE_TEST_SUITE_P(flavours, xen_kernel,
                         ::testing::Values(drv::calling_convention::sysv,
                                           drv::calling_convention::ms_x64),
                         [](const auto& info) {
                           return info.param == drv::calling_convention::sysv ? "linux" : "windows";
                         });

}  // namespace
