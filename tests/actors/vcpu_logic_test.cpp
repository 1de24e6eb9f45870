// The decision and the step-over state machine, without actors or threads.

#include "actors/hotpath/vcpu_logic.hpp"

#include <gtest/gtest.h>

using namespace vmitap;
using drv::event_reason;
namespace flag = drv::flag;
using verdict = vcpu_logic::verdict;

namespace {

constexpr drv::view_id home = 2;

table_ptr table_with(uint64_t pa) {
  table_builder b{{home}};
  b.add(make_breakpoint(breakpoint_def::at("bp", pa), home, armed_by::attach));
  return b.build();
}

drv::event trap(uint64_t pa, drv::view_id view = home) {
  drv::event ev;
  ev.reason = event_reason::mem_access;
  ev.view = view;
  ev.mem = {drv::gfn_of(pa), pa & drv::page_mask, 0, drv::page_access::x, false};
  ev.regs.rax = 42;
  return ev;
}

drv::event singlestep() {
  drv::event ev;
  ev.reason = event_reason::singlestep;
  ev.view = 0;
  return ev;
}

struct decision {
  drv::response rsp;
  verdict v;
  size_t hits;
};

decision decide(vcpu_logic& logic, const drv::event& ev, const table_ptr& t) {
  std::vector<breakpoint_ptr> hits;
  verdict v;
  auto rsp = logic.decide(ev, t.get(), hits, v);
  return {rsp, v, hits.size()};
}

}  // namespace

TEST(vcpu_logic, fast_step_leaves_for_view_zero_for_one_instruction_and_returns_home) {
  auto t = table_with(0x100010);
  vcpu_logic logic{step_mode::fast, home};
  auto d = decide(logic, trap(0x100010), t);
  EXPECT_EQ(d.v, verdict::hit);
  EXPECT_EQ(d.hits, 1u);
  EXPECT_EQ(d.rsp.flags, flag::vcpu_paused | flag::alternate_p2m | flag::fast_singlestep);
  EXPECT_EQ(d.rsp.view, 0);
  EXPECT_EQ(d.rsp.fast_return_view, home);
  EXPECT_EQ(d.rsp.regs.rax, 42u) << "the request's registers, for SET_REGISTERS";
  EXPECT_FALSE(logic.stepping());
}

TEST(vcpu_logic, classic_step_toggles_singlestep_on_and_off_across_two_events) {
  auto t = table_with(0x100010);
  vcpu_logic logic{step_mode::classic, home};
  auto d = decide(logic, trap(0x100018), t);
  EXPECT_EQ(d.v, verdict::neighbour);
  EXPECT_EQ(d.rsp.flags, flag::vcpu_paused | flag::alternate_p2m | flag::toggle_singlestep);
  EXPECT_EQ(d.rsp.view, 0);
  EXPECT_TRUE(logic.stepping());
  auto back = decide(logic, singlestep(), t);
  EXPECT_EQ(back.v, verdict::singlestep);
  EXPECT_EQ(back.rsp.flags, flag::vcpu_paused | flag::alternate_p2m | flag::toggle_singlestep);
  EXPECT_EQ(back.rsp.view, home);
  EXPECT_FALSE(logic.stepping());
  EXPECT_FALSE(logic.singlestep_on());
}

TEST(vcpu_logic, emulate_answers_in_place_without_a_view_switch) {
  auto t = table_with(0x100010);
  vcpu_logic logic{step_mode::emulate, home};
  auto d = decide(logic, trap(0x100010), t);
  EXPECT_EQ(d.v, verdict::hit);
  EXPECT_EQ(d.rsp.flags, flag::vcpu_paused | flag::emulate);
  EXPECT_EQ(d.rsp.reason, event_reason::mem_access) << "echoed: Xen emulates only then";
  EXPECT_EQ(d.rsp.mem, trap(0x100010).mem) << "the violation echoed";
}

TEST(vcpu_logic, a_page_no_longer_monitored_is_stale_and_one_in_no_managed_view_spurious) {
  auto t = table_with(0x100010);
  vcpu_logic logic{step_mode::fast, home};
  EXPECT_EQ(decide(logic, trap(0x200000), t).v, verdict::stale);
  auto other = decide(logic, trap(0x100010, 5), t);
  EXPECT_EQ(other.v, verdict::spurious);
  EXPECT_TRUE(other.rsp.flags & flag::fast_singlestep) << "stepped over all the same";
}

TEST(vcpu_logic, a_homing_vcpu_goes_home_on_its_first_singlestep) {
  auto t = table_with(0x100010);
  vcpu_logic logic{step_mode::fast, home, true};
  EXPECT_TRUE(logic.singlestep_on());
  auto d = decide(logic, singlestep(), t);
  EXPECT_EQ(d.v, verdict::singlestep);
  EXPECT_EQ(d.rsp.flags, flag::vcpu_paused | flag::alternate_p2m | flag::toggle_singlestep);
  EXPECT_EQ(d.rsp.view, home);
  EXPECT_FALSE(logic.homing());
}

TEST(vcpu_logic, a_homing_vcpu_that_traps_first_is_sent_home_by_its_step) {
  auto t = table_with(0x100010);
  vcpu_logic logic{step_mode::fast, home, true};
  auto d = decide(logic, trap(0x100010, 1), t);
  EXPECT_EQ(d.rsp.fast_return_view, home);
  EXPECT_FALSE(logic.homing()) << "a fast step ends singlestepping too";
  vcpu_logic classic{step_mode::classic, home, true};
  auto c = decide(classic, trap(0x100010, 1), t);
  EXPECT_FALSE(c.rsp.flags & flag::toggle_singlestep) << "singlestep is on already";
  EXPECT_EQ(decide(classic, singlestep(), t).rsp.view, home);
  EXPECT_FALSE(classic.homing());
}

TEST(vcpu_logic, an_unasked_singlestep_is_spurious_and_turned_off) {
  vcpu_logic logic{step_mode::fast, home};
  auto d = decide(logic, singlestep(), nullptr);
  EXPECT_EQ(d.v, verdict::spurious);
  EXPECT_EQ(d.rsp.flags, flag::vcpu_paused | flag::toggle_singlestep);
}

TEST(vcpu_logic, malformed_requests_get_a_plain_answer) {
  vcpu_logic logic{step_mode::classic, home};
  auto ev = trap(0x100010);
  ev.version = 6;
  auto bad = decide(logic, ev, nullptr);
  EXPECT_EQ(bad.v, verdict::bad_version);
  EXPECT_EQ(bad.rsp.version, drv::interface_version);
  EXPECT_EQ(bad.rsp.flags, flag::vcpu_paused);
  ev.version = drv::interface_version;
  ev.reason = drv::event_reason(0x7f);
  EXPECT_EQ(decide(logic, ev, nullptr).v, verdict::unknown_reason);
  EXPECT_FALSE(logic.stepping());
}

// A handler moved rip: the trapped instruction does not run, so nothing steps over it. The
// VCPU resumes at the new rip, in its home view, with singlestepping off, in every mode.
TEST(vcpu_logic, a_redirect_resumes_at_the_new_rip_without_stepping_in_every_mode) {
  for (auto mode : {step_mode::fast, step_mode::classic, step_mode::emulate}) {
    SCOPED_TRACE(to_string(mode));
    vcpu_logic logic{mode, home};
    auto ev = trap(0x100010);
    ev.regs.cr3 = 0x5000;
    auto regs = ev.regs;
    regs.rip = 0xffffffff80101234;
    regs.rax = 7;
    regs.cr3 = 0x9000;  // a response never writes cr3
    auto rsp = logic.redirect(ev, regs);
    EXPECT_EQ(rsp.flags, flag::vcpu_paused | flag::set_registers);
    EXPECT_EQ(rsp.regs.rip, regs.rip);
    EXPECT_EQ(rsp.regs.rax, 7u);
    EXPECT_EQ(rsp.regs.cr3, 0x5000u);
    EXPECT_FALSE(logic.stepping());
    EXPECT_FALSE(logic.singlestep_on());
  }
}

TEST(vcpu_logic, a_redirect_of_a_homing_vcpu_sends_it_home_and_turns_its_singlestep_off) {
  vcpu_logic logic{step_mode::classic, home, /*homing=*/true};
  auto ev = trap(0x100010, 1);
  auto regs = ev.regs;
  regs.rip = 0x1000;
  auto rsp = logic.redirect(ev, regs);
  EXPECT_EQ(rsp.flags, flag::vcpu_paused | flag::set_registers | flag::alternate_p2m |
                         flag::toggle_singlestep);
  EXPECT_EQ(rsp.view, home);
  EXPECT_FALSE(logic.homing());
  EXPECT_FALSE(logic.singlestep_on());
  // Its next trap steps over as any other.
  auto t = table_with(0x100010);
  auto d = decide(logic, trap(0x100010), t);
  EXPECT_EQ(d.v, verdict::hit);
  EXPECT_EQ(d.rsp.flags, flag::vcpu_paused | flag::alternate_p2m | flag::toggle_singlestep);
}

// A read or write that traps on a monitored page (its original access lacked it, or an INT3
// shadow page asks for it) is its own verdict: no hit, not stale, and the VCPU steps over it.
TEST(vcpu_logic, a_read_or_write_of_a_monitored_page_is_a_data_access_stepped_over) {
  auto t = table_with(0x100010);
  for (auto access : {drv::page_access::r, drv::page_access::w}) {
    vcpu_logic logic{step_mode::fast, home};
    auto ev = trap(0x100010);
    ev.mem.attempted = access;
    auto d = decide(logic, ev, t);
    EXPECT_EQ(d.v, verdict::data_access);
    EXPECT_EQ(d.hits, 0u) << "at a breakpoint's address, but not its execution";
    EXPECT_EQ(d.rsp.flags, flag::vcpu_paused | flag::alternate_p2m | flag::fast_singlestep);
    EXPECT_EQ(d.rsp.fast_return_view, home);
  }
  vcpu_logic logic{step_mode::fast, home};
  auto ev = trap(0x200010);  // a page the table does not monitor: still stale, as before
  ev.mem.attempted = drv::page_access::r;
  EXPECT_EQ(decide(logic, ev, t).v, verdict::stale);
}

// A write to a watched page table is stepped classically in every mode: the registry walks
// the tables at the SINGLESTEP that follows, when the write is done and the VCPU still waits.
TEST(vcpu_logic, a_page_table_write_is_a_classic_step_in_every_mode_and_its_singlestep_is_told) {
  table_builder b{{home}};
  b.add(make_breakpoint(breakpoint_def::at("bp", 0x100010), home, armed_by::attach));
  b.watch({0x300, 0x7f0});
  table_ptr t = b.build();
  for (auto mode : {step_mode::fast, step_mode::classic, step_mode::emulate}) {
    SCOPED_TRACE(to_string(mode));
    vcpu_logic logic{mode, home};
    auto ev = trap(drv::pa_of(0x7f0, 0x18));
    ev.mem.attempted = drv::page_access::w;
    auto d = decide(logic, ev, t);
    EXPECT_EQ(d.v, verdict::table_write);
    EXPECT_EQ(d.rsp.flags, flag::vcpu_paused | flag::alternate_p2m | flag::toggle_singlestep);
    EXPECT_EQ(d.rsp.view, 0);
    EXPECT_EQ(logic.written_table(), 0x7f0u);
    auto back = decide(logic, singlestep(), t);
    EXPECT_EQ(back.v, verdict::table_written);
    EXPECT_EQ(back.rsp.flags, flag::vcpu_paused | flag::alternate_p2m | flag::toggle_singlestep);
    EXPECT_EQ(back.rsp.view, home);
    EXPECT_FALSE(logic.singlestep_on());
    // The next step is an ordinary one again.
    auto hit = decide(logic, trap(0x100010), t);
    EXPECT_EQ(hit.v, verdict::hit);
    if (mode == step_mode::classic) {
      EXPECT_EQ(decide(logic, singlestep(), t).v, verdict::singlestep);
    }
  }
}

// The hardware setting an accessed or dirty bit (Xen 4.17 has no r_pw): counted, stepped
// over like any trap, nothing walked.
TEST(vcpu_logic, an_accessed_bit_update_in_a_watched_table_is_stepped_over_in_the_lane_s_mode) {
  table_builder b{{home}};
  b.watch({0x7f0});
  table_ptr t = b.build();
  vcpu_logic logic{step_mode::fast, home};
  auto ev = trap(drv::pa_of(0x7f0, 0x18));
  ev.mem.attempted = drv::page_access::w;
  ev.mem.in_page_walk = true;
  auto d = decide(logic, ev, t);
  EXPECT_EQ(d.v, verdict::table_bits);
  EXPECT_EQ(d.rsp.flags, flag::vcpu_paused | flag::alternate_p2m | flag::fast_singlestep);
  // A read of a watched table is nobody's business: its access kept Read.
  ev.mem.in_page_walk = false;
  ev.mem.attempted = drv::page_access::r;
  EXPECT_EQ(decide(logic, ev, t).v, verdict::stale);
}
