// The simulated hypervisor must behave as Xen does where vmitap depends on it: these tests
// drive it in manual mode, one slice at a time, and play the monitor's side by hand.

#include "tests/support/sim_fixture.hpp"

#include <map>

using namespace vmitap;
using namespace vmitap::testing;
using drv::event_reason;
using drv::page_access;
namespace flag = drv::flag;

using sim_semantics = sim_fixture;

TEST_F(sim_semantics, executing_x_denied_page_raises_one_event_with_fault_details) {
  boot();
  auto view = monitored_view();
  deny_execute_on_all_code(view);
  auto ev = next_event();
  EXPECT_EQ(ev.version, drv::interface_version);
  EXPECT_EQ(ev.reason, event_reason::mem_access);
  EXPECT_EQ(ev.vcpu, 0u);
  EXPECT_EQ(ev.view, view);
  EXPECT_EQ(ev.mem.attempted, page_access::x);
  EXPECT_TRUE(ev.mem.gla_valid);
  EXPECT_TRUE(ev.flags & flag::vcpu_paused);
  auto pa = dom->layout().kernel.pa_of(ev.regs.rip);
  EXPECT_EQ(drv::pa_of(ev.mem.gfn, ev.mem.offset), pa) << "gfn/offset name the fetched address";
  EXPECT_EQ(ev.mem.gla, ev.regs.rip);
  EXPECT_TRUE(dom->code().index_of(pa)) << "rip is an instruction start";
  EXPECT_EQ(hv->run_pending(), 0u) << "a paused VCPU does not run";
  EXPECT_TRUE(take_all().empty()) << "exactly one event";
  EXPECT_EQ(dom->instructions_retired(), 0u);
}

TEST_F(sim_semantics, reads_and_writes_on_rw_pages_raise_nothing) {
  auto cfg = small_domain();
  cfg.instructions_per_vcpu = 20000;
  boot(cfg);
  auto view = monitored_view();
  set(view, dom->code().first_code_gfn(), dom->code().last_data_gfn(), page_access::rw);
  set(view, dom->code().first_code_gfn(), dom->code().last_code_gfn(), page_access::rx);
  hv->run_pending();
  EXPECT_TRUE(take_all().empty());
  EXPECT_TRUE(dom->halted());
  EXPECT_EQ(dom->instructions_retired(), 20000u);
}

TEST_F(sim_semantics, denied_data_access_raises_read_or_write_event) {
  boot();
  auto view = monitored_view();
  auto data_first = dom->code().last_data_gfn() - 15;
  set(view, data_first, dom->code().last_data_gfn(), page_access::none);
  auto ev = next_event();
  EXPECT_EQ(ev.reason, event_reason::mem_access);
  EXPECT_TRUE(ev.mem.attempted == page_access::r || ev.mem.attempted == page_access::w);
  EXPECT_GE(ev.mem.gfn, data_first);
}

TEST_F(sim_semantics, response_view_switch_changes_only_that_vcpu) {
  boot(small_domain(2));
  auto view = monitored_view();
  auto other = session->create_view(page_access::rwx);
  ASSERT_TRUE(other);
  deny_execute_on_all_code(view);
  auto ev = next_event();
  respond(ev, flag::alternate_p2m, *other);
  hv->run_pending(8);  // applied when the VCPU next runs, as at VM entry
  EXPECT_EQ(dom->vcpu_view(ev.vcpu), *other);
  EXPECT_EQ(dom->vcpu_view(1 - ev.vcpu), view);
}

TEST_F(sim_semantics, toggle_singlestep_yields_one_singlestep_event_after_one_instruction) {
  boot();
  auto view = monitored_view();
  deny_execute_on_all_code(view);
  auto trap = next_event();
  auto pa = dom->layout().kernel.pa_of(trap.regs.rip);
  respond(trap, flag::alternate_p2m | flag::toggle_singlestep, 0);
  auto ss = next_event();
  EXPECT_EQ(ss.reason, event_reason::singlestep);
  EXPECT_EQ(ss.view, 0);
  EXPECT_EQ(dom->instructions_retired(), 1u);
  EXPECT_EQ(dom->executions(pa, view), 1u) << "counted in the view it was reached in";
  EXPECT_TRUE(dom->vcpu_singlestepping(0));
  respond(ss, flag::alternate_p2m | flag::toggle_singlestep, view);
  auto next = next_event();
  EXPECT_FALSE(dom->vcpu_singlestepping(0));
  EXPECT_EQ(next.reason, event_reason::mem_access) << "singlestep is off again";
  EXPECT_EQ(next.view, view);
}

TEST_F(sim_semantics, fast_singlestep_returns_to_its_view_without_event) {
  boot();
  auto view = monitored_view();
  deny_execute_on_all_code(view);
  auto trap = next_event();
  auto pa = dom->layout().kernel.pa_of(trap.regs.rip);
  EXPECT_EQ(dom->executions(pa, view), 0u);
  EXPECT_EQ(dom->reached(pa, view), 1u) << "trapped there, not retired: reached already";
  fast_step(trap, view);
  auto next = next_event();
  EXPECT_EQ(dom->executions(pa, view), 1u);
  EXPECT_EQ(dom->reached(pa, view), 1u) << "retired now, counted once";
  EXPECT_EQ(next.reason, event_reason::mem_access) << "no singlestep event";
  EXPECT_EQ(next.view, view);
  EXPECT_FALSE(dom->vcpu_singlestepping(0));
  EXPECT_EQ(dom->instructions_retired(), 1u);
}

TEST_F(sim_semantics, emulate_runs_the_instruction_in_place_and_the_next_fetch_traps_again) {
  boot();
  auto view = monitored_view();
  deny_execute_on_all_code(view);
  auto trap = next_event();
  auto pa = dom->layout().kernel.pa_of(trap.regs.rip);
  respond(trap, flag::emulate);
  auto next = next_event();
  EXPECT_EQ(dom->executions(pa, view), 1u) << "emulated once, counted in its view";
  EXPECT_EQ(dom->vcpu_view(0), view) << "no view switch";
  EXPECT_EQ(next.reason, event_reason::mem_access) << "one event per trapped instruction";
  EXPECT_EQ(next.view, view);
  EXPECT_NE(next.regs.rip, trap.regs.rip);
  EXPECT_EQ(dom->instructions_retired(), 1u);
}

// Xen emulates only while the echoed access still violates the VCPU's view: an answer whose
// echo does not (the page was restored meanwhile, or the echo names an allowed access)
// resumes the VCPU with the usual EPT checks.
TEST_F(sim_semantics, emulate_acts_only_while_the_echoed_access_still_violates) {
  boot();
  auto view = monitored_view();
  deny_execute_on_all_code(view);
  auto trap = next_event();
  auto pa = dom->layout().kernel.pa_of(trap.regs.rip);
  auto rsp = drv::make_response(trap);
  rsp.flags |= flag::emulate;
  rsp.mem.attempted = page_access::r;  // the page allows reads: no violation
  ASSERT_FALSE(give(rsp));
  auto again = next_event();
  EXPECT_EQ(again.regs.rip, trap.regs.rip) << "not emulated: the same fetch traps again";
  EXPECT_EQ(dom->executions(pa, view), 0u);
  respond(again, flag::emulate);  // an honest echo: emulated
  next_event();
  EXPECT_EQ(dom->executions(pa, view), 1u);
}

TEST_F(sim_semantics, emulate_on_a_singlestep_request_does_nothing) {
  boot();
  auto view = monitored_view();
  ASSERT_FALSE(session->set_singlestep(0, true));
  auto ss = next_event();
  ASSERT_EQ(ss.reason, event_reason::singlestep);
  respond(ss, flag::emulate | flag::toggle_singlestep);
  deny_execute_on_all_code(view);
  auto next = next_event();
  EXPECT_EQ(next.reason, event_reason::mem_access) << "the next fetch is checked as usual";
  EXPECT_EQ(dom->vcpu_retired(0), 1u) << "nothing ran unchecked";
}

TEST_F(sim_semantics, singlestep_turned_on_by_the_monitor_raises_a_singlestep_request) {
  boot(small_domain(2));
  monitored_view();
  ASSERT_FALSE(session->set_singlestep(1, true));
  auto ev = next_event();
  EXPECT_EQ(ev.reason, event_reason::singlestep);
  EXPECT_EQ(ev.vcpu, 1u);
  EXPECT_EQ(dom->vcpu_retired(1), 1u) << "after one instruction";
}

TEST_F(sim_semantics, unanswered_vcpu_makes_no_progress_while_others_do) {
  boot(small_domain(2));
  auto view = monitored_view();
  deny_execute_on_all_code(view);
  std::optional<drv::event> held;
  for (int i = 0; i < 200; ++i) {
    auto ev = next_event();
    if (ev.vcpu == 0 && !held) {
      held = ev;
      continue;
    }
    ASSERT_EQ(ev.vcpu, 1u) << "vcpu 0 waits for its answer";
    fast_step(ev, view);
  }
  EXPECT_EQ(dom->vcpu_retired(0), 0u);
  EXPECT_GE(dom->vcpu_retired(1), 190u);
}

TEST_F(sim_semantics, answering_a_vcpu_that_is_not_paused_is_an_error) {
  boot();
  drv::event fake;
  fake.vcpu = 0;
  auto err = give(drv::make_response(fake));
  EXPECT_EQ(code_of(err), ec::vcpu_not_paused) << render(err);
  EXPECT_EQ(dom->check().responses_rejected, 1u);
  fake.vcpu = 9;
  EXPECT_EQ(code_of(give(drv::make_response(fake))), ec::no_such_vcpu);
}

TEST_F(sim_semantics, response_with_wrong_version_is_dropped_and_vcpu_stays_paused) {
  boot();
  auto view = monitored_view();
  deny_execute_on_all_code(view);
  auto ev = next_event();
  auto rsp = drv::make_response(ev);
  rsp.version = 6;
  EXPECT_FALSE(give(rsp)) << "Xen drops it silently";
  auto inv = dom->check();
  EXPECT_EQ(inv.responses_dropped, 1u);
  EXPECT_EQ(inv.unanswered, 1u);
  EXPECT_EQ(inv.paused_vcpus, 1u);
}

TEST_F(sim_semantics, response_without_pause_flag_leaves_vcpu_paused_until_detach) {
  boot();
  auto view = monitored_view();
  deny_execute_on_all_code(view);
  auto rsp = drv::make_response(next_event());
  rsp.flags = 0;
  EXPECT_FALSE(give(rsp));
  hv->run_pending();
  EXPECT_EQ(dom->check().paused_vcpus, 1u);
  EXPECT_EQ(dom->check().unanswered, 0u);
  EXPECT_FALSE(session->detach());
  EXPECT_EQ(dom->check().paused_vcpus, 0u) << "tearing down the ring unpauses";
}

TEST_F(sim_semantics, set_registers_writes_the_block_but_never_cr3) {
  boot();
  auto view = monitored_view();
  deny_execute_on_all_code(view);
  auto ev = next_event();
  auto rsp = drv::make_response(ev);
  rsp.flags |= flag::set_registers | flag::alternate_p2m | flag::fast_singlestep;
  rsp.fast_return_view = view;
  rsp.regs.rax = 0x1234;
  rsp.regs.r15 = 0x5678;
  rsp.regs.cr3 = 0xdead000;
  ASSERT_FALSE(give(rsp));
  auto next = next_event();
  EXPECT_EQ(next.regs.rax, 0x1234u);
  EXPECT_EQ(next.regs.r15, 0x5678u);
  EXPECT_EQ(next.regs.cr3, ev.regs.cr3);
}

TEST_F(sim_semantics, destroying_a_view_in_use_fails) {
  boot();
  auto view = monitored_view();
  EXPECT_EQ(code_of(session->destroy_view(view)), ec::view_in_use);
  EXPECT_EQ(code_of(session->destroy_view(0)), ec::invalid_argument);
  ASSERT_FALSE(session->switch_all(0));
  EXPECT_FALSE(session->destroy_view(view));
  EXPECT_EQ(code_of(session->destroy_view(view)), ec::no_such_view);
}

TEST_F(sim_semantics, at_most_nine_views_can_be_created) {
  boot();
  for (int i = 0; i < 9; ++i)
    ASSERT_TRUE(session->create_view(page_access::rwx));
  EXPECT_EQ(code_of(session->create_view(page_access::rwx).error()), ec::no_such_view);
}

TEST_F(sim_semantics, new_view_copies_host_access_and_a_destroyed_changed_view_is_counted) {
  auto cfg = small_domain();
  cfg.code_access = page_access::rx;
  boot(cfg);
  auto view = monitored_view();
  auto gfn = dom->code().first_code_gfn();
  EXPECT_EQ(access(view, gfn), page_access::rx) << "lazily copied from the host p2m";
  set(view, gfn, gfn, page_access::r);
  ASSERT_FALSE(session->switch_all(0));
  ASSERT_FALSE(session->destroy_view(view));
  EXPECT_EQ(dom->check().pages_changed, 1u);
}

TEST_F(sim_semantics, host_p2m_writes_propagate_into_views) {
  boot();
  auto view = monitored_view();
  auto gfn = dom->code().first_code_gfn();
  set(view, gfn, gfn, page_access::rw);
  set(0, gfn, gfn, page_access::rx);
  EXPECT_EQ(access(view, gfn), page_access::rx);
  EXPECT_EQ(dom->check().pages_changed, 1u) << "the host p2m differs from attach time";
}

TEST_F(sim_semantics, batched_read_is_one_call_and_non_ram_is_an_error) {
  boot();
  auto view = monitored_view();
  auto first = dom->code().first_code_gfn();
  set(view, first, first, page_access::r);
  std::vector<drv::gfn_t> gfns{first, first + 1};
  std::vector<page_access> out(2);
  auto before = dom->calls().get_access;
  ASSERT_FALSE(session->get_access(view, gfns, out));
  EXPECT_EQ(dom->calls().get_access, before + 1);
  EXPECT_EQ(out[0], page_access::r);
  EXPECT_EQ(out[1], page_access::rwx);
  gfns[1] = dom->info().max_gfn + 1;
  EXPECT_EQ(code_of(session->get_access(view, gfns, out)), ec::gfn_out_of_range);
}

TEST_F(sim_semantics, non_ram_gfn_set_succeeds_and_does_nothing) {
  boot();
  auto view = monitored_view();
  auto beyond = dom->info().max_gfn + 1;
  EXPECT_FALSE(
    session->set_access(view, std::vector<drv::access_change>{{beyond, page_access::none}}));
  std::array<std::byte, 16> buf;
  EXPECT_FALSE(session->read_physical(drv::pa_of(dom->code().first_code_gfn()), buf));
  EXPECT_TRUE(session->read_physical(drv::pa_of(beyond), buf));
}

TEST_F(sim_semantics, same_seed_gives_the_same_program_and_another_seed_another) {
  auto a = sim::program::generate(small_domain(1, 11).workload, 4095);
  auto b = sim::program::generate(small_domain(1, 11).workload, 4095);
  auto c = sim::program::generate(small_domain(1, 12).workload, 4095);
  ASSERT_TRUE(a && b && c);
  ASSERT_EQ(a->size(), b->size());
  for (size_t i = 0; i < a->size(); ++i)
    ASSERT_EQ(a->at(uint32_t(i)).pa, b->at(uint32_t(i)).pa);
  EXPECT_NE(a->functions()[1].entry_pa, c->functions()[1].entry_pa);
}

TEST_F(sim_semantics, ground_truth_matches_an_independent_count) {
  auto cfg = small_domain(2);
  cfg.instructions_per_vcpu = 3000;
  boot(cfg);
  auto view = monitored_view();
  deny_execute_on_all_code(view);
  std::map<uint64_t, uint64_t> traps;  // every fetch traps: count them per address
  std::vector<drv::event> buf(8);
  for (;;) {
    size_t n = ring->take(buf);
    if (n == 0 && hv->run_pending(1) == 0)
      break;
    for (size_t i = 0; i < n; ++i) {
      ++traps[dom->layout().kernel.pa_of(buf[i].regs.rip)];
      fast_step(buf[i], view);
    }
  }
  ASSERT_TRUE(dom->halted());
  uint64_t total = 0;
  for (auto& [pa, n] : traps) {
    EXPECT_EQ(dom->executions(pa, view), n) << "at pa " << pa;
    total += n;
  }
  EXPECT_EQ(total, 6000u);
  EXPECT_EQ(dom->instructions_retired(), 6000u);
}

// An answer takes effect when given, as on Xen (at the notify): a control operation that
// follows it sees it applied, although the VCPU runs only later.
TEST_F(sim_semantics, a_control_operation_after_an_answer_sees_the_answer_applied) {
  boot();
  auto view = monitored_view();
  auto other = *session->create_view(page_access::rwx);
  deny_execute_on_all_code(view);
  auto ev = next_event();
  respond(ev, flag::alternate_p2m, other);  // not run yet
  EXPECT_EQ(dom->vcpu_view(0), other);
  ASSERT_FALSE(session->switch_all(0));
  EXPECT_FALSE(session->destroy_view(other)) << "no answer lands in it after the switch";
  EXPECT_FALSE(session->destroy_view(view));
}
