// The simulated hypervisor's sessions, faults, death and threads: what the ground truth must
// stay exact through.

#include "tests/support/sim_fixture.hpp"

#include <thread>

using namespace vmitap;
using namespace vmitap::testing;
using drv::page_access;
namespace flag = drv::flag;

using sim_lifecycle = sim_fixture;

TEST_F(sim_lifecycle, second_attach_is_refused) {
  boot();
  auto again = driver.attach(dom->id());
  ASSERT_FALSE(again);
  EXPECT_EQ(code_of(again.error()), ec::already_attached);
  EXPECT_EQ(code_of(driver.attach(999).error()), ec::no_such_domain);
}

TEST_F(sim_lifecycle, an_old_session_can_never_touch_a_newer_attachment) {
  boot();
  monitored_view();
  ASSERT_FALSE(session->detach());
  auto newer = driver.attach(dom->id());
  ASSERT_TRUE(newer) << render(newer.error());
  auto view = (*newer)->create_view(page_access::rwx);
  ASSERT_TRUE(view);
  // The old session: its calls fail, its detach and its destructor do nothing.
  EXPECT_EQ(code_of(session->create_view(page_access::rwx).error()), ec::not_attached);
  EXPECT_FALSE(session->detach());
  session.reset();
  EXPECT_FALSE((*newer)->switch_all(*view)) << "the newer session still owns the domain";
  EXPECT_TRUE((*newer)->start_events());
  EXPECT_EQ(code_of(driver.attach(dom->id()).error()), ec::already_attached);
}

TEST_F(sim_lifecycle, failing_access_change_applies_a_prefix_and_names_the_call_and_errno) {
  boot();
  auto view = monitored_view();
  auto first = dom->code().first_code_gfn();
  dom->fail_access_changes(1, 2, EIO);
  std::vector<drv::access_change> changes;
  for (int i = 0; i < 5; ++i)
    changes.push_back({first + i, page_access::rw});
  auto err = session->set_access(view, changes);
  EXPECT_EQ(code_of(err), ec::driver_call_failed);
  EXPECT_NE(render(err).find("set_access"), std::string::npos) << render(err);
  EXPECT_NE(render(err).find("errno 5"), std::string::npos) << render(err);
  EXPECT_EQ(access(view, first + 1), page_access::rw);
  EXPECT_EQ(access(view, first + 2), page_access::rwx);
  EXPECT_FALSE(session->set_access(view, changes)) << "only the next call fails";
}

TEST_F(sim_lifecycle, domain_death_stops_vcpus_answers_silently_and_says_dead_not_a_driver_fault) {
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
  EXPECT_FALSE(give(drv::make_response(ev))) << "success, silently";
  EXPECT_EQ(code_of(session->set_access(view, {})), ec::domain_dead);
  auto retired = dom->instructions_retired();
  hv->run_pending();
  EXPECT_EQ(dom->instructions_retired(), retired) << "a dead domain runs no more";
  EXPECT_FALSE(session->detach());
  EXPECT_FALSE(session->detach()) << "detach twice is fine";
  EXPECT_TRUE(driver.list_domains()->empty());
  auto inv = dom->check();
  EXPECT_EQ(inv.dropped_by_death, 1u) << "the request outstanding at death";
  EXPECT_EQ(inv.requests_answered, 0u) << "the late answer did not count it a second time";
  EXPECT_EQ(inv.requests_raised, inv.requests_answered + inv.dropped_by_death);
}

TEST_F(sim_lifecycle, a_rebooted_domain_comes_back_under_its_name_with_a_new_id) {
  std::vector<drv::domain_change> changes;
  driver.watch([&](const drv::domain_change& c) { changes.push_back(c); });
  boot();
  auto fresh = hv->restart_domain(dom->id());
  ASSERT_TRUE(fresh);
  EXPECT_NE(fresh->id(), dom->id());
  EXPECT_EQ(fresh->info().name, dom->info().name);
  ASSERT_EQ(changes.size(), 3u);
  EXPECT_FALSE(changes[1].started);
  EXPECT_TRUE(changes[2].started);
  EXPECT_EQ(changes[2].domain.id, fresh->id());
}

TEST_F(sim_lifecycle, the_smallest_memory_works_and_too_little_is_an_error_not_an_exception) {
  auto cfg = small_domain();
  cfg.memory_mib = 8;
  ASSERT_TRUE(hv->create_domain(cfg)) << "8 MiB holds the default workload";
  cfg.memory_mib = 1;
  auto made = hv->create_domain(cfg);
  ASSERT_FALSE(made);
  EXPECT_NE(render(made.error()).find("MiB"), std::string::npos) << render(made.error());
}

TEST_F(sim_lifecycle, malformed_bad_version_request_pauses_until_answered) {
  boot();
  dom->inject_malformed(0, sim::malformed_kind::bad_version);
  auto ev = next_event();
  EXPECT_EQ(ev.version, drv::interface_version - 1);
  EXPECT_EQ(dom->check().unanswered, 1u);
  EXPECT_FALSE(give(drv::make_response(ev)));
  EXPECT_TRUE(dom->check().holds());
}

TEST_F(sim_lifecycle, malformed_unknown_reason_request_is_raised) {
  boot();
  dom->inject_malformed(0, sim::malformed_kind::unknown_reason);
  auto ev = next_event();
  EXPECT_EQ(uint32_t(ev.reason), 0x7fu);
  EXPECT_FALSE(give(drv::make_response(ev)));
  EXPECT_EQ(dom->check().unanswered, 0u);
}

TEST_F(sim_lifecycle, malformed_vcpu_out_of_range_is_in_the_ring_and_answered_once) {
  boot(small_domain(2));
  dom->inject_malformed(0, sim::malformed_kind::vcpu_out_of_range);
  auto got = take_all();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_GE(got[0].vcpu, 2u);
  EXPECT_EQ(dom->check().unanswered, 1u);
  EXPECT_FALSE(give(drv::make_response(got[0])));
  EXPECT_EQ(dom->check().unanswered, 0u);
  EXPECT_EQ(code_of(give(drv::make_response(got[0]))), ec::no_such_vcpu);
}

TEST_F(sim_lifecycle, delayed_response_resumes_the_vcpu_only_after_the_delay) {
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

TEST_F(sim_lifecycle, detach_answers_leftovers_and_returns_vcpus_to_view_zero) {
  boot(small_domain(2));
  auto view = monitored_view();
  deny_execute_on_all_code(view);
  auto ev = next_event();
  respond(ev, flag::alternate_p2m | flag::toggle_singlestep, 0);
  hv->run_pending();
  ASSERT_FALSE(session->pause());
  EXPECT_EQ(dom->check().paused_vcpus, 2u);
  ASSERT_FALSE(session->detach());
  auto inv = dom->check();
  EXPECT_EQ(inv.paused_vcpus, 0u);
  EXPECT_EQ(inv.unanswered, 0u);
  EXPECT_GE(inv.answered_by_detach, 1u) << "the requests raised since were never answered";
  EXPECT_EQ(inv.requests_raised, inv.requests_answered + inv.answered_by_detach);
  EXPECT_EQ(inv.pages_changed, dom->code().last_code_gfn() - dom->code().first_code_gfn() + 1)
    << "the view was destroyed with its pages still changed";
  for (uint32_t v = 0; v < 2; ++v) {
    EXPECT_EQ(dom->vcpu_view(v), 0);
    EXPECT_FALSE(dom->vcpu_singlestepping(v));
  }
  EXPECT_FALSE(session->detach());
}

TEST(sim_threaded, guest_threads_run_free_vcpus_to_their_budget) {
  auto hv = std::make_shared<sim::hypervisor>(sim::hypervisor_config{.guest_threads = 2});
  auto cfg = small_domain(4);
  cfg.instructions_per_vcpu = 50000;
  auto dom = *hv->create_domain(cfg);
  sim::sim_driver driver{hv};
  auto session = std::move(*driver.attach(dom->id()));
  ASSERT_TRUE(session->start_events());
  for (int i = 0; i < 2000 && !dom->halted(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_TRUE(dom->halted());
  EXPECT_EQ(dom->instructions_retired(), 200000u);
  EXPECT_GT(hv->guest_cpu_time().count(), 0);
}

TEST(sim_threaded, response_latency_and_resume_lateness_are_recorded_per_answer) {
  auto hv = std::make_shared<sim::hypervisor>(
    sim::hypervisor_config{.exit_latency = std::chrono::microseconds(20)});
  auto cfg = small_domain(1);
  cfg.instructions_per_vcpu = 2000;
  auto dom = *hv->create_domain(cfg);
  sim::sim_driver driver{hv};
  auto session = std::move(*driver.attach(dom->id()));
  auto view = *session->create_view(page_access::rwx);
  ASSERT_FALSE(session->switch_all(view));
  auto gfn = dom->code().first_code_gfn();
  ASSERT_FALSE(session->set_access(view, std::vector<drv::access_change>{{gfn, page_access::rw}}));
  auto* ring = *session->start_events();
  std::vector<drv::event> buf(4);
  uint64_t answered = 0;
  while (!dom->halted()) {
    for (size_t i = 0, n = ring->take(buf); i < n; ++i, ++answered) {
      auto rsp = drv::make_response(buf[i]);
      rsp.flags |= flag::alternate_p2m | flag::fast_singlestep;
      rsp.view = 0;
      rsp.fast_return_view = view;
      ASSERT_EQ(ring->give(std::span{&rsp, 1}).failed, 0u);
    }
  }
  ASSERT_GT(answered, 0u);
  EXPECT_EQ(dom->response_latency().count(), answered);
  EXPECT_EQ(dom->resume_lateness().count(), answered);
  EXPECT_TRUE(dom->check().holds());
}
