// The simulated hypervisor must behave as Xen does (DESIGN.md §4): these tests drive it in
// manual mode, one slice at a time, and play the monitoring application's side by hand.

#include "drivers/sim/sim_driver.hpp"
#include "engine/error.hpp"

#include <gtest/gtest.h>

#include <deque>
#include <map>
#include <thread>

using namespace vmitap;
using drv::page_access;
using drv::event_reason;
namespace flag = drv::flag;

namespace {

sim::domain_config small_domain(uint32_t vcpus = 1, uint64_t seed = 7) {
  sim::domain_config cfg;
  cfg.name = "test";
  cfg.vcpus = vcpus;
  cfg.memory_mib = 16;
  cfg.workload.seed = seed;
  cfg.workload.functions = 24;
  return cfg;
}

class sim_hypervisor_test : public ::testing::Test {
protected:
  std::shared_ptr<sim::hypervisor> hv
    = std::make_shared<sim::hypervisor>(sim::hypervisor_config{.threaded = false,
                                                               .slice_instructions = 64});
  sim::sim_driver driver{hv};
  std::shared_ptr<sim::domain> dom;
  std::unique_ptr<drv::domain_session> session;
  std::deque<drv::event> events;  // manual mode: every handler runs on this thread
  std::vector<drv::event> orphans;

  void boot(sim::domain_config cfg = small_domain()) {
    dom = hv->create_domain(std::move(cfg));
    auto s = driver.attach(dom->id());
    ASSERT_TRUE(s) << render(s.error());
    session = std::move(*s);
    drv::event_handlers handlers;
    for (uint32_t i = 0; i < dom->config().vcpus; ++i)
      handlers.per_vcpu.push_back([this](const drv::event& ev) { events.push_back(ev); });
    handlers.orphan = [this](const drv::event& ev) { orphans.push_back(ev); };
    ASSERT_FALSE(session->start_events(std::move(handlers)));
  }

  drv::view_id monitored_view() {
    auto v = session->create_view(page_access::rwx);
    EXPECT_TRUE(v);
    EXPECT_FALSE(session->switch_all(*v));
    return *v;
  }

  void deny(drv::view_id view, drv::gfn_t first, drv::gfn_t last, page_access value) {
    std::vector<drv::access_change> changes;
    for (auto gfn = first; gfn <= last; ++gfn)
      changes.push_back({gfn, value});
    ASSERT_FALSE(session->set_access(view, changes));
  }

  void deny_execute_on_all_code(drv::view_id view) {
    deny(view, dom->code().first_code_gfn(), dom->code().last_code_gfn(), page_access::rw);
  }

  /// Runs slices until an event is queued; fails if the guest goes idle first.
  drv::event next_event(size_t max_slices = 100000) {
    while (events.empty() && max_slices-- > 0)
      if (hv->run_pending(1) == 0)
        break;
    EXPECT_FALSE(events.empty()) << "no event raised";
    if (events.empty())
      return {};
    auto ev = events.front();
    events.pop_front();
    return ev;
  }

  void respond(const drv::event& ev, uint32_t extra_flags, drv::view_id view = 0,
               drv::view_id fast_return = 0) {
    auto rsp = drv::make_response(ev);
    rsp.flags |= extra_flags;
    rsp.view = view;
    rsp.fast_return_view = fast_return;
    auto err = session->respond(rsp);
    ASSERT_FALSE(err) << render(err);
  }

  /// Steps over a trapped instruction the fast way, as the engine does.
  void fast_step(const drv::event& ev, drv::view_id back) {
    respond(ev, flag::alternate_p2m | flag::fast_singlestep, 0, back);
  }
};

}  // namespace

TEST_F(sim_hypervisor_test, executing_x_denied_page_raises_one_event_with_fault_details) {
  boot();
  auto view = monitored_view();
  deny_execute_on_all_code(view);
  auto ev = next_event();
  EXPECT_EQ(ev.version, drv::interface_version);
  EXPECT_EQ(ev.reason, event_reason::mem_access);
  EXPECT_EQ(ev.vcpu, 0u);
  EXPECT_EQ(ev.view, view);
  EXPECT_EQ(ev.mem.attempted, page_access::x);
  EXPECT_TRUE(ev.flags & flag::vcpu_paused);
  auto pa = ev.regs.rip - sim::kernel_base;
  EXPECT_EQ(drv::pa_of(ev.mem.gfn, ev.mem.offset), pa) << "gfn/offset name the fetched address";
  EXPECT_EQ(ev.mem.gla, ev.regs.rip);
  EXPECT_TRUE(dom->code().index_of(pa)) << "rip is an instruction start";
  EXPECT_EQ(hv->run_pending(), 0u) << "a paused VCPU does not run";
  EXPECT_TRUE(events.empty()) << "exactly one event";
  EXPECT_EQ(dom->instructions_retired(), 0u);
}

TEST_F(sim_hypervisor_test, reads_and_writes_on_rw_pages_raise_nothing) {
  auto cfg = small_domain();
  cfg.instructions_per_vcpu = 20000;
  boot(cfg);
  auto view = monitored_view();
  auto& wl = cfg.workload;
  deny(view, dom->code().first_code_gfn(), dom->code().last_code_gfn(), page_access::rx);
  deny(view, wl.data_base_gfn, wl.data_base_gfn + wl.data_pages - 1, page_access::rw);
  hv->run_pending();
  EXPECT_TRUE(events.empty());
  EXPECT_TRUE(dom->halted());
  EXPECT_EQ(dom->instructions_retired(), 20000u);
  uint64_t memory_ops = 0;
  for (auto& [key, n] : dom->all_executions()) {
    auto kind = dom->code().at(*dom->code().index_of(key.first)).kind;
    memory_ops += (kind == sim::op::load || kind == sim::op::store) ? n : 0;
  }
  EXPECT_GT(memory_ops, 1000u) << "the workload did read and write";
}

TEST_F(sim_hypervisor_test, denied_data_access_raises_read_or_write_event) {
  auto cfg = small_domain();
  boot(cfg);
  auto view = monitored_view();
  auto& wl = cfg.workload;
  deny(view, wl.data_base_gfn, wl.data_base_gfn + wl.data_pages - 1, page_access::none);
  auto ev = next_event();
  EXPECT_EQ(ev.reason, event_reason::mem_access);
  EXPECT_TRUE(ev.mem.attempted == page_access::r || ev.mem.attempted == page_access::w);
  EXPECT_GE(ev.mem.gfn, wl.data_base_gfn);
  EXPECT_LT(ev.mem.gfn, wl.data_base_gfn + wl.data_pages);
}

TEST_F(sim_hypervisor_test, response_view_switch_changes_only_that_vcpu) {
  boot(small_domain(2));
  auto view = monitored_view();
  auto other = session->create_view(page_access::rwx);
  ASSERT_TRUE(other);
  deny_execute_on_all_code(view);
  auto ev = next_event();
  respond(ev, flag::alternate_p2m, *other);
  EXPECT_EQ(dom->vcpu_view(ev.vcpu), *other);
  EXPECT_EQ(dom->vcpu_view(1 - ev.vcpu), view);
}

TEST_F(sim_hypervisor_test, toggle_singlestep_yields_one_singlestep_event_after_one_instruction) {
  boot();
  auto view = monitored_view();
  deny_execute_on_all_code(view);
  auto trap = next_event();
  auto pa = trap.regs.rip - sim::kernel_base;
  respond(trap, flag::alternate_p2m | flag::toggle_singlestep, 0);
  auto ss = next_event();
  EXPECT_EQ(ss.reason, event_reason::singlestep);
  EXPECT_EQ(ss.view, 0);
  EXPECT_EQ(dom->instructions_retired(), 1u);
  EXPECT_EQ(dom->executions(pa, view), 1u) << "counted in the view it was reached in";
  EXPECT_TRUE(dom->vcpu_singlestepping(0));
  respond(ss, flag::alternate_p2m | flag::toggle_singlestep, view);
  EXPECT_FALSE(dom->vcpu_singlestepping(0));
  auto next = next_event();
  EXPECT_EQ(next.reason, event_reason::mem_access) << "singlestep is off again";
  EXPECT_EQ(next.view, view);
  EXPECT_EQ(dom->instructions_retired(), 1u);
}

TEST_F(sim_hypervisor_test, fast_singlestep_returns_to_its_view_without_event) {
  boot();
  auto view = monitored_view();
  deny_execute_on_all_code(view);
  auto trap = next_event();
  auto pa = trap.regs.rip - sim::kernel_base;
  EXPECT_EQ(dom->executions(pa, view), 0u);
  EXPECT_EQ(dom->reached(pa, view), 1u) << "trapped there, not retired: reached already";
  fast_step(trap, view);
  auto next = next_event();
  EXPECT_EQ(dom->executions(pa, view), 1u);
  EXPECT_EQ(dom->reached(pa, view), 1u) << "retired now, counted once";
  EXPECT_EQ(next.reason, event_reason::mem_access) << "no singlestep event";
  EXPECT_EQ(next.view, view);
  EXPECT_EQ(dom->vcpu_view(0), view);
  EXPECT_FALSE(dom->vcpu_singlestepping(0));
  EXPECT_EQ(dom->instructions_retired(), 1u);
}

TEST_F(sim_hypervisor_test, unanswered_vcpu_makes_no_progress_while_others_do) {
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

TEST_F(sim_hypervisor_test, answering_a_vcpu_that_is_not_paused_is_an_error) {
  boot();
  drv::event fake;
  fake.vcpu = 0;
  auto err = session->respond(drv::make_response(fake));
  EXPECT_EQ(code_of(err), ec::vcpu_not_paused) << render(err);
  EXPECT_EQ(dom->check().responses_rejected, 1u);
  fake.vcpu = 9;
  EXPECT_EQ(code_of(session->respond(drv::make_response(fake))), ec::no_such_vcpu);
}

TEST_F(sim_hypervisor_test, response_with_wrong_version_is_dropped_and_vcpu_stays_paused) {
  boot();
  auto view = monitored_view();
  deny_execute_on_all_code(view);
  auto ev = next_event();
  auto rsp = drv::make_response(ev);
  rsp.version = 6;
  EXPECT_FALSE(session->respond(rsp)) << "Xen drops it silently";
  auto inv = dom->check();
  EXPECT_EQ(inv.responses_dropped, 1u);
  EXPECT_EQ(inv.unanswered, 1u);
  EXPECT_EQ(inv.paused_vcpus, 1u);
}

TEST_F(sim_hypervisor_test, response_without_pause_flag_leaves_vcpu_paused_until_detach) {
  boot();
  auto view = monitored_view();
  deny_execute_on_all_code(view);
  auto ev = next_event();
  auto rsp = drv::make_response(ev);
  rsp.flags = 0;
  EXPECT_FALSE(session->respond(rsp));
  EXPECT_EQ(dom->check().paused_vcpus, 1u);
  EXPECT_EQ(dom->check().unanswered, 0u);
  EXPECT_FALSE(session->detach());
  EXPECT_EQ(dom->check().paused_vcpus, 0u) << "tearing down the ring unpauses";
}

TEST_F(sim_hypervisor_test, destroying_a_view_in_use_fails) {
  boot();
  auto view = monitored_view();
  auto err = session->destroy_view(view);
  EXPECT_EQ(code_of(err), ec::view_in_use) << render(err);
  EXPECT_EQ(code_of(session->destroy_view(0)), ec::invalid_argument);
  ASSERT_FALSE(session->switch_all(0));
  EXPECT_FALSE(session->destroy_view(view));
  EXPECT_EQ(code_of(session->destroy_view(view)), ec::no_such_view);
}

TEST_F(sim_hypervisor_test, new_view_copies_host_access_and_restore_is_measured) {
  auto cfg = small_domain();
  cfg.code_access = page_access::rx;
  boot(cfg);
  auto view = monitored_view();
  auto gfn = dom->code().first_code_gfn();
  EXPECT_EQ(*session->get_access(view, gfn), page_access::rx) << "lazily copied from the host p2m";
  deny(view, gfn, gfn, page_access::r);
  ASSERT_FALSE(session->switch_all(0));
  ASSERT_FALSE(session->destroy_view(view));
  EXPECT_EQ(dom->check().pages_changed, 1u) << "a view destroyed with a changed page is counted";
}

TEST_F(sim_hypervisor_test, host_p2m_writes_propagate_into_views) {
  boot();
  auto view = monitored_view();
  auto gfn = dom->code().first_code_gfn();
  deny(view, gfn, gfn, page_access::rw);
  deny(0, gfn, gfn, page_access::rx);
  EXPECT_EQ(*session->get_access(view, gfn), page_access::rx);
  EXPECT_EQ(dom->check().pages_changed, 1u) << "the host p2m differs from attach time";
}

TEST_F(sim_hypervisor_test, non_ram_gfn_set_succeeds_and_does_nothing) {
  boot();
  auto view = monitored_view();
  auto beyond = dom->info().max_gfn + 1;
  EXPECT_FALSE(session->set_access(view, std::vector<drv::access_change>{{beyond, page_access::none}}));
  EXPECT_EQ(code_of(session->get_access(view, beyond).error()), ec::gfn_out_of_range);
  std::array<std::byte, 16> buf;
  EXPECT_FALSE(session->read_physical(drv::pa_of(dom->code().first_code_gfn()), buf));
  EXPECT_TRUE(session->read_physical(drv::pa_of(beyond), buf));
}

TEST_F(sim_hypervisor_test, second_attach_is_refused) {
  boot();
  auto again = driver.attach(dom->id());
  ASSERT_FALSE(again);
  EXPECT_EQ(code_of(again.error()), ec::already_attached);
  EXPECT_EQ(code_of(driver.attach(999).error()), ec::no_such_domain);
}

namespace {

std::vector<std::tuple<uint32_t, uint64_t, uint32_t>> first_events(uint64_t seed, int count) {
  auto hv = std::make_shared<sim::hypervisor>(sim::hypervisor_config{.threaded = false,
                                                                     .slice_instructions = 50});
  sim::sim_driver driver{hv};
  auto dom = hv->create_domain(small_domain(3, seed));
  auto session = std::move(*driver.attach(dom->id()));
  std::deque<drv::event> events;
  drv::event_handlers h;
  for (int i = 0; i < 3; ++i)
    h.per_vcpu.push_back([&](const drv::event& ev) { events.push_back(ev); });
  h.orphan = [](const drv::event&) {};
  session->start_events(std::move(h));
  auto view = *session->create_view(page_access::rwx);
  session->switch_all(view);
  std::vector<drv::access_change> changes;
  for (auto gfn = dom->code().first_code_gfn(); gfn <= dom->code().last_code_gfn(); gfn += 2)
    changes.push_back({gfn, page_access::rw});
  session->set_access(view, changes);
  std::vector<std::tuple<uint32_t, uint64_t, uint32_t>> seen;
  while (int(seen.size()) < count && (!events.empty() || hv->run_pending(1) > 0)) {
    if (events.empty())
      continue;
    auto ev = events.front();
    events.pop_front();
    seen.emplace_back(ev.vcpu, ev.regs.rip, uint32_t(ev.reason));
    auto rsp = drv::make_response(ev);
    rsp.flags |= flag::alternate_p2m | flag::toggle_singlestep;
    rsp.view = ev.reason == event_reason::singlestep ? view : 0;
    session->respond(rsp);
  }
  return seen;
}

}  // namespace

TEST(sim_determinism, same_seed_gives_same_event_sequence) {
  auto a = first_events(11, 500);
  auto b = first_events(11, 500);
  ASSERT_EQ(a.size(), 500u);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, first_events(12, 500)) << "and another seed another one";
}

TEST_F(sim_hypervisor_test, ground_truth_matches_an_independent_count) {
  auto cfg = small_domain(2);
  cfg.instructions_per_vcpu = 3000;
  boot(cfg);
  auto view = monitored_view();
  deny_execute_on_all_code(view);
  std::map<uint64_t, uint64_t> traps;  // every fetch traps: count them per address
  while (true) {
    while (events.empty() && hv->run_pending(1) > 0) {
    }
    if (events.empty())
      break;
    auto ev = events.front();
    events.pop_front();
    ++traps[ev.regs.rip - sim::kernel_base];
    fast_step(ev, view);
  }
  ASSERT_TRUE(dom->halted());
  uint64_t total = 0;
  for (auto& [pa, n] : traps) {
    EXPECT_EQ(dom->executions(pa, view), n) << "at pa " << pa;
    total += n;
  }
  EXPECT_EQ(total, 6000u);
  EXPECT_EQ(dom->instructions_retired(), 6000u);
  EXPECT_EQ(dom->all_executions().size(), traps.size());
}

TEST_F(sim_hypervisor_test, failing_access_change_applies_a_prefix_and_names_call_and_errno) {
  boot();
  auto view = monitored_view();
  auto first = dom->code().first_code_gfn();
  dom->fail_access_changes(1, 2, EIO);
  std::vector<drv::access_change> changes;
  for (int i = 0; i < 5; ++i)
    changes.push_back({first + i, page_access::rw});
  auto err = session->set_access(view, changes);
  EXPECT_EQ(code_of(err), ec::driver_call_failed);
  EXPECT_NE(render(err).find("xc_altp2m_set_mem_access_multi"), std::string::npos) << render(err);
  EXPECT_NE(render(err).find("errno 5"), std::string::npos) << render(err);
  EXPECT_EQ(*session->get_access(view, first + 1), page_access::rw);
  EXPECT_EQ(*session->get_access(view, first + 2), page_access::rwx);
  EXPECT_FALSE(session->set_access(view, changes)) << "only the next call fails";
}

TEST_F(sim_hypervisor_test, domain_death_mid_run_stops_vcpus_and_answers_silently) {
  std::vector<drv::domain_change> changes;
  driver.watch([&](const drv::domain_change& c) { changes.push_back(c); });
  boot(small_domain(2));
  auto view = monitored_view();
  deny_execute_on_all_code(view);
  auto ev = next_event();
  dom->kill();
  ASSERT_EQ(changes.size(), 2u);
  EXPECT_TRUE(changes[0].started);
  EXPECT_FALSE(changes[1].started);
  EXPECT_EQ(changes[1].domain.state, drv::domain_state::dead);
  EXPECT_FALSE(session->respond(drv::make_response(ev))) << "success, silently";
  EXPECT_EQ(code_of(session->set_access(view, {})), ec::driver_call_failed);
  auto retired = dom->instructions_retired();
  hv->run_pending();
  EXPECT_EQ(dom->instructions_retired(), retired) << "a dead domain runs no more";
  EXPECT_FALSE(session->detach());
  EXPECT_FALSE(session->detach()) << "detach twice is fine";
  EXPECT_TRUE(driver.list_domains()->empty());
  auto inv = dom->check();
  EXPECT_EQ(inv.dropped_by_death + inv.requests_answered, inv.requests_raised);
}

TEST_F(sim_hypervisor_test, malformed_bad_version_request_pauses_until_answered) {
  boot();
  auto view = monitored_view();
  dom->inject_malformed(0, sim::malformed_kind::bad_version);
  auto ev = next_event();
  EXPECT_EQ(ev.version, drv::interface_version - 1);
  EXPECT_EQ(dom->check().unanswered, 1u);
  drv::response rsp;
  rsp.vcpu = ev.vcpu;
  rsp.flags = flag::vcpu_paused;
  EXPECT_FALSE(session->respond(rsp));
  EXPECT_TRUE(dom->check().holds());
  (void) view;
}

TEST_F(sim_hypervisor_test, malformed_unknown_reason_request_is_raised) {
  boot();
  dom->inject_malformed(0, sim::malformed_kind::unknown_reason);
  auto ev = next_event();
  EXPECT_EQ(uint32_t(ev.reason), 0x7fu);
  EXPECT_FALSE(session->respond(drv::make_response(ev)));
  EXPECT_EQ(dom->check().unanswered, 0u);
}

TEST_F(sim_hypervisor_test, malformed_vcpu_out_of_range_goes_to_orphan_handler) {
  boot(small_domain(2));
  dom->inject_malformed(0, sim::malformed_kind::vcpu_out_of_range);
  ASSERT_EQ(orphans.size(), 1u);
  EXPECT_GE(orphans[0].vcpu, 2u);
  EXPECT_EQ(dom->check().unanswered, 1u);
  EXPECT_FALSE(session->respond(drv::make_response(orphans[0])));
  EXPECT_EQ(dom->check().unanswered, 0u);
  EXPECT_EQ(code_of(session->respond(drv::make_response(orphans[0]))), ec::no_such_vcpu);
}

TEST_F(sim_hypervisor_test, delayed_response_resumes_the_vcpu_only_after_the_delay) {
  boot();
  auto view = monitored_view();
  deny_execute_on_all_code(view);
  auto ev = next_event();
  dom->delay_responses(1, std::chrono::milliseconds(50));
  fast_step(ev, view);
  hv->run_pending();
  EXPECT_EQ(dom->instructions_retired(), 0u) << "still waiting for the delayed resume";
  std::this_thread::sleep_for(std::chrono::milliseconds(60));
  next_event();
  EXPECT_EQ(dom->instructions_retired(), 1u);
}

TEST_F(sim_hypervisor_test, detach_answers_leftovers_and_returns_vcpus_to_view_zero) {
  boot(small_domain(2));
  auto view = monitored_view();
  deny_execute_on_all_code(view);
  auto ev = next_event();
  respond(ev, flag::alternate_p2m | flag::toggle_singlestep, 0);
  ASSERT_FALSE(session->pause());
  EXPECT_EQ(dom->check().paused_vcpus, 2u);
  ASSERT_FALSE(session->detach());
  auto inv = dom->check();
  EXPECT_EQ(inv.paused_vcpus, 0u);
  EXPECT_EQ(inv.unanswered, 0u);
  EXPECT_GE(inv.answered_by_detach, 1u) << "the other VCPU's trap was never answered";
  EXPECT_EQ(inv.pages_changed, uint64_t(dom->code().last_code_gfn() - dom->code().first_code_gfn() + 1))
    << "the view was destroyed with its pages still changed";
  for (uint32_t v = 0; v < 2; ++v) {
    EXPECT_EQ(dom->vcpu_view(v), 0);
    EXPECT_FALSE(dom->vcpu_singlestepping(v));
  }
  EXPECT_FALSE(session->detach());
}

TEST(sim_threaded, runner_thread_drives_free_running_vcpus_to_their_budget) {
  auto hv = std::make_shared<sim::hypervisor>();
  auto cfg = small_domain(4);
  cfg.instructions_per_vcpu = 50000;
  auto dom = hv->create_domain(cfg);
  sim::sim_driver driver{hv};
  auto session = std::move(*driver.attach(dom->id()));
  drv::event_handlers h;
  for (int i = 0; i < 4; ++i)
    h.per_vcpu.push_back([](const drv::event&) {});
  h.orphan = [](const drv::event&) {};
  ASSERT_FALSE(session->start_events(std::move(h)));
  for (int i = 0; i < 2000 && !dom->halted(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_TRUE(dom->halted());
  EXPECT_EQ(dom->instructions_retired(), 200000u);
}
