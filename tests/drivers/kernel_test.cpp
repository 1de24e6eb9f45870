// The running kernel as vmitap finds it (drivers/guest/kernel.hpp) on the simulated guest,
// Linux and Windows, under the KASLR slides several seeds draw: every symbol of the sim's own
// profile resolves to the sim's function entry, another build's profile is refused naming
// both builds, the process on a paused VCPU is the one the sim runs there, and symbol and
// address breakpoint targets resolve (actors/control/symbol_resolver.hpp) as the page tables
// say.

#include "drivers/guest/kernel.hpp"
#include "actors/control/symbol_resolver.hpp"
#include "drivers/error.hpp"
#include "drivers/guest/profile.hpp"
#include "drivers/sim/domain.hpp"
#include "drivers/sim/kernel.hpp"
#include "drivers/sim/sim_driver.hpp"
#include "tests/support/memory_session.hpp"
#include "tests/support/sim_fixture.hpp"

#include <gmock/gmock.h>

#include <map>
#include <set>

using namespace vmitap;
using namespace vmitap::testing;
using ::testing::HasSubstr;

namespace {

constexpr uint64_t two_mib = uint64_t{2} << 20;
constexpr uint64_t seeds[] = {3, 11, 29, 101, 4242};

/// One simulated guest in manual mode, attached (nothing runs until run_pending).
struct guest {
  std::shared_ptr<sim::hypervisor> hv = std::make_shared<sim::hypervisor>(
    sim::hypervisor_config{.threaded = false, .slice_instructions = 64});
  sim::sim_driver driver{hv};
  std::shared_ptr<sim::domain> dom;
  std::unique_ptr<drv::domain_session> session;  // destroyed first: before the host
  drv::event_ring* ring = nullptr;

  const sim::sim_kernel& kernel() const { return dom->layout().kernel; }
  uint64_t entry_pa(size_t function) const { return dom->code().functions()[function].entry_pa; }
};

std::unique_ptr<guest> boot(const sim::domain_config& cfg) {
  auto g = std::make_unique<guest>();
  auto made = g->hv->create_domain(cfg);
  EXPECT_TRUE(made) << render(made.error());
  if (!made)
    return nullptr;
  g->dom = *made;
  auto s = g->driver.attach(g->dom->id());
  EXPECT_TRUE(s) << render(s.error());
  if (!s)
    return nullptr;
  g->session = std::move(*s);
  return g;
}

drv::kernel_profile profile_of(const sim::domain_config& cfg) {
  auto json = sim::kernel_profile_json(cfg);
  EXPECT_TRUE(json) << render(json.error());
  if (!json)
    return {};
  auto p = drv::parse_profile(*json, "sim-" + std::to_string(cfg.workload.seed) + "-" +
                                       drv::to_string(sim::kernel_os_of(cfg)) + ".json");
  EXPECT_TRUE(p) << render(p.error());
  return p ? std::move(*p) : drv::kernel_profile{};
}

/// What locate_kernel must report as the running kernel's identity.
std::string identity_of(const sim::sim_kernel& k) {
  if (k.os == drv::kernel_os::windows_kernel)
    return k.pdb.guid + " age " + std::to_string(k.pdb.age);
  return k.banner;
}

/// The banner or GUID as a message shows it (a banner's newline escaped).
std::string shown(const sim::sim_kernel& k) {
  if (k.os == drv::kernel_os::windows_kernel)
    return k.pdb.guid + " age " + std::to_string(k.pdb.age);
  auto b = k.banner;
  if (!b.empty() && b.back() == '\n')
    b.pop_back();
  return b;
}

class kernel : public ::testing::TestWithParam<drv::calling_convention> {
protected:
  drv::kernel_os os() const {
    return GetParam() == drv::calling_convention::ms_x64 ? drv::kernel_os::windows_kernel
                                                         : drv::kernel_os::linux_kernel;
  }
  sim::domain_config config(uint64_t seed, uint32_t vcpus = 2, uint32_t processes = 2) const {
    auto cfg = small_domain(vcpus, seed);
    cfg.abi = GetParam();
    cfg.processes = processes;
    return cfg;
  }
};

TEST_P(kernel, every_symbol_resolves_to_the_sims_own_entry_under_a_random_slide) {
  std::set<uint64_t> slides;
  for (auto seed : seeds) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    auto cfg = config(seed);
    auto g = boot(cfg);
    ASSERT_TRUE(g);
    auto profile = profile_of(cfg);
    ASSERT_EQ(profile.os, os());
    auto& k = g->kernel();
    ASSERT_EQ(k.os, os());
    EXPECT_EQ(k.slide % two_mib, 0u) << "KASLR slides are 2 MiB aligned";
    slides.insert(k.slide);

    auto found = drv::locate_kernel(*g->session, profile, cfg.vcpus);
    ASSERT_TRUE(found) << render(found.error());
    auto& map = *found;
    EXPECT_EQ(map.os, os());
    EXPECT_EQ(map.vcpu, 0u);
    auto regs = g->session->vcpu_registers(0);
    ASSERT_TRUE(regs);
    EXPECT_EQ(map.cr3, regs->cr3);
    EXPECT_TRUE(map.reads_processes);
    if (os() == drv::kernel_os::linux_kernel) {
      EXPECT_EQ(map.identity, k.banner);
      EXPECT_EQ(map.slide, k.slide);
    } else {
      // kernel.hpp documents "GUID age"; the PDB's name may precede it.
      EXPECT_THAT(map.identity, HasSubstr(identity_of(k)));
      EXPECT_EQ(map.image_base, k.va_of(drv::pa_of(k.image_gfn)));
      EXPECT_EQ(map.image_base % drv::page_size, 0u);
    }

    // The profile names the sim's functions, and on Linux the banner and the per-CPU
    // current_task: nothing else.
    std::set<std::string> expected(k.function_names.begin(), k.function_names.end());
    ASSERT_EQ(expected.size(), k.function_names.size()) << "function names are unique";
    if (os() == drv::kernel_os::linux_kernel) {
      expected.insert("linux_banner");
      expected.insert("current_task");
    }
    std::set<std::string> named;
    for (auto& [name, value] : profile.symbols)
      named.insert(name);
    EXPECT_EQ(named, expected);

    drv::page_walker walker{*g->session};
    std::vector<breakpoint_def> defs;
    for (size_t i = 0; i < k.function_names.size(); ++i) {
      auto& name = k.function_names[i];
      auto value = profile.symbol(name);
      ASSERT_TRUE(value) << name;
      auto va = map.va_of(*value);
      EXPECT_EQ(va, k.va_of(g->entry_pa(i))) << name;
      auto t = walker.translate(map.cr3, va);
      ASSERT_TRUE(t) << name << ": " << drv::to_string(t.fault);
      EXPECT_EQ(t.pa, g->entry_pa(i)) << name;
      breakpoint_def def;
      def.options.name = name;
      def.target.by = breakpoint_target::kind::symbol;
      def.target.symbol = name;
      defs.push_back(std::move(def));
    }
    if (os() == drv::kernel_os::linux_kernel) {
      auto t = walker.translate(map.cr3, map.va_of(*profile.symbol("linux_banner")));
      ASSERT_TRUE(t);
      EXPECT_EQ(t.pa, drv::pa_of(k.image_gfn, sim::layout_of::banner_offset));
    }

    auto r = resolve_symbols(&profile, &map, defs);
    for (auto& [name, err] : r.failed)
      ADD_FAILURE() << name << ": " << render(err);
    ASSERT_EQ(r.resolved.size(), k.function_names.size());
    for (size_t i = 0; i < r.resolved.size(); ++i) {
      auto& t = r.resolved[i].target;
      EXPECT_EQ(r.resolved[i].name(), k.function_names[i]);
      EXPECT_EQ(t.va, k.va_of(g->entry_pa(i))) << t.symbol;
      auto at = place_virtual(walker, map.cr3, t.va);
      EXPECT_FALSE(at.error) << t.symbol;
      EXPECT_EQ(at.pa, g->entry_pa(i)) << t.symbol;
      EXPECT_FALSE(at.watched) << t.symbol << ": a 2 MiB page of the image is never paged";
    }
  }
  EXPECT_GT(slides.size(), 1u) << "the seeds draw different slides";
}

TEST_P(kernel, another_builds_profile_is_refused_naming_the_expected_and_the_found_build) {
  for (auto seed : seeds) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    auto cfg = config(seed);
    auto g = boot(cfg);
    ASSERT_TRUE(g);
    auto other_cfg = config(seed + 1);
    auto other = profile_of(other_cfg);
    // The other build's kernel as the sim would build it (for its banner or GUID).
    auto other_guest = boot(other_cfg);
    ASSERT_TRUE(other_guest);
    ASSERT_NE(identity_of(other_guest->kernel()), identity_of(g->kernel()));

    auto found = drv::locate_kernel(*g->session, other, cfg.vcpus);
    ASSERT_FALSE(found) << "located with another build's profile: " << found->identity;
    EXPECT_EQ(code_of(found.error()), ec::profile_mismatch) << render(found.error());
    auto message = render(found.error());
    EXPECT_THAT(message, HasSubstr(shown(other_guest->kernel()))) << "the expected build";
    EXPECT_THAT(message, HasSubstr(shown(g->kernel()))) << "the found build";
  }
}

TEST_P(kernel, a_profile_of_the_other_flavour_is_refused) {
  for (auto seed : seeds) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    auto cfg = config(seed);
    auto g = boot(cfg);
    ASSERT_TRUE(g);
    auto other_cfg = cfg;
    other_cfg.abi = GetParam() == drv::calling_convention::sysv ? drv::calling_convention::ms_x64
                                                                : drv::calling_convention::sysv;
    auto other = profile_of(other_cfg);
    ASSERT_NE(other.os, os());
    auto found = drv::locate_kernel(*g->session, other, cfg.vcpus);
    ASSERT_FALSE(found) << "located with the other flavour's profile: " << found->identity;
    EXPECT_EQ(code_of(found.error()), ec::profile_mismatch) << render(found.error());
  }
}

TEST_P(kernel, process_at_every_trapped_instruction_is_the_process_the_sim_runs_there) {
  size_t events = 0;
  bool switched = false;
  for (auto seed : {seeds[0], seeds[1], seeds[2]}) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    auto cfg = config(seed, 3, 5);
    cfg.instructions_per_vcpu = 3000;
    auto g = boot(cfg);
    ASSERT_TRUE(g);
    auto profile = profile_of(cfg);
    auto found = drv::locate_kernel(*g->session, profile, cfg.vcpus);
    ASSERT_TRUE(found) << render(found.error());
    ASSERT_TRUE(found->reads_processes);
    auto& k = g->kernel();
    ASSERT_EQ(k.processes.size(), 5u);

    auto view = g->session->create_view(drv::page_access::rwx);
    ASSERT_TRUE(view);
    ASSERT_FALSE(g->session->switch_all(*view));
    std::vector<drv::access_change> deny;
    for (auto gfn = g->dom->code().first_code_gfn(); gfn <= g->dom->code().last_code_gfn(); ++gfn)
      deny.push_back({gfn, drv::page_access::rw});
    ASSERT_FALSE(g->session->set_access(*view, deny));
    auto ring = g->session->start_events();
    ASSERT_TRUE(ring);

    std::vector<std::set<uint32_t>> seen(cfg.vcpus);
    std::vector<drv::event> buf(8);
    for (;;) {
      auto n = (*ring)->take(buf);
      if (n == 0 && g->hv->run_pending(1) == 0)
        break;
      for (size_t e = 0; e < n; ++e) {
        auto& ev = buf[e];
        auto p = g->dom->vcpu_process(ev.vcpu);
        ASSERT_LT(p, k.processes.size());
        auto& truth = k.processes[p];
        drv::process_info expected{truth.pid, truth.tid(ev.vcpu, os()), truth.ppid, truth.name};
        drv::page_walker walker{*g->session};  // one per pause
        auto got = drv::process_at(walker, ev.regs, *found);
        ASSERT_TRUE(got) << render(got.error());
        EXPECT_EQ(*got, expected) << "VCPU " << ev.vcpu << " in process " << p << ": got pid "
                                  << got->pid << " tid " << got->tid << " ppid " << got->ppid << " "
                                  << got->name;
        // The same VCPU seen in user mode: the kernel's GS base is the one swapgs put aside.
        auto user = ev.regs;
        user.cs.sel = 0x33;
        user.shadow_gs = user.gs_base;
        user.gs_base = 0x7f00'0000'0000ULL;
        auto in_user = drv::process_at(walker, user, *found);
        ASSERT_TRUE(in_user) << render(in_user.error());
        EXPECT_EQ(*in_user, expected);
        // At the syscall entry, in kernel mode before swapgs: GS is still the user's (the
        // process's own choice, never trusted); the kernel's is the one put aside.
        auto entry = user;
        entry.cs.sel = 0x10;
        auto at_entry = drv::process_at(walker, entry, *found);
        ASSERT_TRUE(at_entry) << render(at_entry.error());
        EXPECT_EQ(*at_entry, expected);
        seen[ev.vcpu].insert(p);
        ++events;
        auto rsp = drv::make_response(ev);
        rsp.flags |= drv::flag::alternate_p2m | drv::flag::fast_singlestep;
        rsp.view = 0;
        rsp.fast_return_view = *view;
        auto r = (*ring)->give(std::span{&rsp, 1});
        ASSERT_EQ(r.failed, 0u) << render(r.first);
      }
    }
    EXPECT_TRUE(g->dom->halted());
    for (auto& s : seen)
      switched |= s.size() > 1;
  }
  EXPECT_GT(events, 3000u);
  EXPECT_TRUE(switched) << "some VCPU ran in more than one process";
}

TEST_P(kernel, without_a_kernel_mode_vcpu_or_with_msr_lstar_unset_the_kernel_is_not_found) {
  auto profile = profile_of(config(seeds[0]));
  memory_session mem;
  drv::registers user;
  user.cs = {0xfffff, 0xafb, 0x33};
  user.msr_lstar = 0xffffffff81000000ULL;
  mem.vcpus = {user, user, user};
  auto found = drv::locate_kernel(mem, profile, 3);
  ASSERT_FALSE(found);
  EXPECT_EQ(code_of(found.error()), ec::no_kernel_mode_vcpu) << render(found.error());
  EXPECT_EQ(mem.reads, 0u) << "a user-mode VCPU's tables may not map the kernel: none is read";

  // VCPU 1 is in the kernel, but it has not set up system calls yet.
  auto kernel_mode = user;
  kernel_mode.cs.sel = 0x10;
  kernel_mode.msr_lstar = 0;
  mem.vcpus[1] = kernel_mode;
  found = drv::locate_kernel(mem, profile, 3);
  ASSERT_FALSE(found);
  EXPECT_EQ(code_of(found.error()), ec::kernel_not_found) << render(found.error());
  EXPECT_THAT(render(found.error()), HasSubstr("VCPU 1"));

  // A VCPU whose registers cannot be read (down, unplugged) is passed over: the other is in
  // user mode, so wait for it.
  mem.vcpus = {user};
  found = drv::locate_kernel(mem, profile, 2);
  ASSERT_FALSE(found);
  EXPECT_EQ(code_of(found.error()), ec::no_kernel_mode_vcpu) << render(found.error());
  // None can be read: the port's error.
  mem.vcpus.clear();
  found = drv::locate_kernel(mem, profile, 2);
  ASSERT_FALSE(found);
  EXPECT_EQ(code_of(found.error()), ec::no_such_vcpu) << render(found.error());
}

TEST_P(kernel, a_profile_without_the_syscall_entry_cannot_find_the_kernel) {
  auto cfg = config(seeds[1]);
  auto g = boot(cfg);
  ASSERT_TRUE(g);
  auto profile = profile_of(cfg);
  for (auto name : {"entry_SYSCALL_64", "KiSystemCall64Shadow", "KiSystemCall64"})
    profile.symbols.erase(name);
  auto found = drv::locate_kernel(*g->session, profile, cfg.vcpus);
  ASSERT_FALSE(found);
  EXPECT_EQ(code_of(found.error()), ec::kernel_not_found) << render(found.error());
  EXPECT_THAT(render(found.error()), HasSubstr(profile.path));
}

TEST_P(kernel, symbols_resolve_to_virtual_addresses_and_walks_place_them_or_leave_them_pending) {
  for (auto seed : {seeds[0], seeds[3]}) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    auto cfg = config(seed);
    auto g = boot(cfg);
    ASSERT_TRUE(g);
    auto profile = profile_of(cfg);
    auto found = drv::locate_kernel(*g->session, profile, cfg.vcpus);
    ASSERT_TRUE(found) << render(found.error());
    auto& k = g->kernel();
    auto& layout = g->dom->layout();

    auto def = [](std::string name, breakpoint_target t) {
      breakpoint_def d;
      d.options.name = std::move(name);
      d.options.view = "main";
      d.target = std::move(t);
      return d;
    };
    // A function's second instruction, by symbol + offset and by virtual address.
    const size_t f = 3;
    auto& fn = g->dom->code().functions()[f];
    auto second = g->dom->code().at(fn.first + 1).pa;
    auto offset = second - fn.entry_pa;
    ASSERT_GT(offset, 0u);
    breakpoint_target by_symbol;
    by_symbol.by = breakpoint_target::kind::symbol;
    by_symbol.symbol = k.function_names[f];
    by_symbol.offset = offset;
    breakpoint_target by_va;
    by_va.by = breakpoint_target::kind::virtual_address;
    by_va.va = k.va_of(second);
    // The user page whose PTE is not present, in the address space the kernel was found in.
    auto process = g->dom->vcpu_process(found->vcpu);
    ASSERT_EQ(layout.processes[process].cr3, found->cr3);
    breakpoint_target unmapped;
    unmapped.by = breakpoint_target::kind::virtual_address;
    unmapped.va = layout.processes[process].unmapped_va + 0x40;
    breakpoint_target unknown;
    unknown.by = breakpoint_target::kind::symbol;
    unknown.symbol = "no_such_function";
    auto physical = breakpoint_target::physical(0x1234567);

    std::vector<breakpoint_def> defs{def("sym", by_symbol), def("va", by_va),
                                     def("unmapped", unmapped), def("unknown", unknown),
                                     def("phys", physical)};
    auto r = resolve_symbols(&profile, &*found, defs);
    std::map<std::string, breakpoint_target> resolved;
    for (auto& d : r.resolved)
      resolved[d.name()] = d.target;
    ASSERT_EQ(resolved.size(), 4u);
    ASSERT_EQ(r.failed.size(), 1u);
    EXPECT_EQ(r.failed[0].first, "unknown");
    EXPECT_EQ(code_of(r.failed[0].second), ec::invalid_argument) << render(r.failed[0].second);
    EXPECT_THAT(render(r.failed[0].second), HasSubstr("no_such_function"));

    drv::page_walker walker{*g->session};
    ASSERT_TRUE(resolved.contains("sym"));
    EXPECT_EQ(resolved["sym"].va, k.va_of(fn.entry_pa) + offset);
    EXPECT_EQ(resolved["sym"].symbol, k.function_names[f]);
    EXPECT_EQ(place_virtual(walker, found->cr3, resolved["sym"].va).pa, fn.entry_pa + offset);
    ASSERT_TRUE(resolved.contains("va"));
    EXPECT_EQ(place_virtual(walker, found->cr3, resolved["va"].va).pa, second);
    ASSERT_TRUE(resolved.contains("phys"));
    EXPECT_EQ(resolved["phys"], physical) << "a physical target is armed as configured";

    // Not mapped: pending, its clear PTE's table page watched.
    ASSERT_TRUE(resolved.contains("unmapped"));
    auto pending = place_virtual(walker, found->cr3, resolved["unmapped"].va);
    EXPECT_FALSE(pending.error) << render(pending.error);
    EXPECT_EQ(pending.pa, 0u);
    EXPECT_TRUE(pending.watched);
    auto clear = walker.translate(found->cr3, resolved["unmapped"].va);
    EXPECT_EQ(clear.level, 1u);
    EXPECT_EQ(pending.table, drv::gfn_of(clear.entry_pa));
    // Past the kernel's map of RAM an upper entry is clear: pending too, that entry watched.
    auto beyond_va = k.va_of(drv::pa_of(g->dom->info().max_gfn + 1));
    auto beyond = place_virtual(walker, found->cr3, beyond_va);
    EXPECT_FALSE(beyond.error) << render(beyond.error);
    EXPECT_EQ(beyond.pa, 0u);
    EXPECT_TRUE(beyond.watched);
    EXPECT_EQ(beyond.table, drv::gfn_of(walker.translate(found->cr3, beyond_va).entry_pa));

    // Without a profile only the physical target resolves.
    auto bare = resolve_symbols(nullptr, nullptr, defs);
    ASSERT_EQ(bare.resolved.size(), 1u);
    EXPECT_EQ(bare.resolved[0].target, physical);
    ASSERT_EQ(bare.failed.size(), 4u);
    for (auto& [name, err] : bare.failed)
      EXPECT_EQ(code_of(err), ec::kernel_not_found) << name << ": " << render(err);
  }
}

INSTANTIATE_TEST_SUITE_P(flavours, kernel,
                         ::testing::Values(drv::calling_convention::sysv,
                                           drv::calling_convention::ms_x64),
                         [](const auto& info) {
                           return info.param == drv::calling_convention::sysv ? "linux" : "windows";
                         });

}  // namespace
