// End to end through the Xen driver: the whole engine on a fake Xen 4.17 (a real vm_event
// ring page, event channel semantics, Xen's response rules) over the simulated hypervisor.
// Hits equal ground truth; every request is answered through the ring; nothing of vmitap's
// is left on a domain; Xen saw nothing it would refuse.

#include "tests/support/xen_scenario.hpp"

#include <set>

using namespace vmitap;
using namespace vmitap::testing;
using namespace std::chrono_literals;

class xen_step_modes : public ::testing::TestWithParam<step_mode> {};

TEST_P(xen_step_modes, hits_equal_ground_truth_through_the_xen_driver) {
  xen_scenario s;
  auto dom = s.add("guest", 2, 150000, GetParam());
  auto reports = s.run();
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_TRUE(s.verified(reports));
  auto& r = reports[0];
  EXPECT_TRUE(r.error.empty()) << r.error;
  EXPECT_GT(r.totals.hits, 50u);
  if (GetParam() == step_mode::classic)
    EXPECT_EQ(r.totals.singlesteps * 2, r.totals.events) << "two events per trap";
  else
    EXPECT_EQ(r.totals.singlesteps, 0u) << "one event per trap";
  EXPECT_EQ(dom->instructions_retired(), 300000u);
  EXPECT_GT(s.xen.notifies(), 0u);
  s.expect_clean();
}

INSTANTIATE_TEST_SUITE_P(every, xen_step_modes,
                         ::testing::Values(step_mode::classic, step_mode::fast, step_mode::emulate),
                         [](auto& info) { return std::string(to_string(info.param)); });

TEST(xen_e2e, two_views_sixteen_vcpus_through_eight_slots_with_wrapping_indices) {
  xen_scenario s;
  s.xen.first_index = 0xffffff00u;
  // Endless, and stopped after enough events: on Xen the guest runs while vmitap attaches
  // (from the monitor's enable to the supervisor's pause), so a bounded VCPU 1 could end
  // its budget before it is ever sent to its home view (it did, 1 run in 12 under load).
  s.add("wide", 16, 0, step_mode::fast, true);
  auto reports = s.run_until([](engine& e) {
    auto p = e.progress();
    return !p.empty() && p[0].events >= 150000;
  });
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_TRUE(s.verified(reports));
  EXPECT_GT(find_bp(reports[0], "fn0_entry_shadow").hits, 0u);
  EXPECT_EQ(s.xen.max_in_flight(), 8u);
  s.expect_clean();
}

TEST(xen_e2e, eight_domains_at_once_and_one_dying_midway) {
  xen_scenario s;
  for (int i = 0; i < 7; ++i)
    s.add("dom-" + std::to_string(i), 2, 40000, step_mode(i % 3));
  auto victim = s.add("victim", 2, 0);  // runs until it dies
  auto reports = s.run([&] { victim->kill(); });
  ASSERT_EQ(reports.size(), 8u);
  EXPECT_TRUE(s.verified(reports));
  for (auto& r : reports) {
    EXPECT_EQ(r.died, r.name == "victim") << r.name;
    EXPECT_TRUE(r.error.empty()) << r.name << ": " << r.error;
  }
  EXPECT_EQ(victim->state(), drv::domain_state::dead);
  s.expect_clean();
}

TEST(xen_e2e, on_xen_before_4_17_4_a_domain_without_a_chosen_mode_steps_the_classic_way) {
  xen_scenario s;
  s.xen.extraversion = ".1";
  s.add("guest", 2, 60000, step_mode::fast);  // the plan's default: not chosen by the config
  auto reports = s.run();
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_TRUE(s.verified(reports));
  EXPECT_EQ(reports[0].totals.singlesteps * 2, reports[0].totals.events);
  s.expect_clean();
}

TEST(xen_e2e, a_failed_notify_is_counted_and_the_next_one_carries_its_answers) {
  xen_scenario s;
  s.add("guest", 2, 100000, step_mode::fast);
  auto reports = s.run([&] { s.xen.fail_next("xenevtchn_notify", EIO); });
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_GT(reports[0].totals.respond_failures, 0u);
  reports[0].totals.respond_failures = 0;  // counted; and nothing was lost for it:
  EXPECT_TRUE(s.verified(reports));
  s.expect_clean();
}

// Regression (issue 21): the poller retried an owed notify once before it slept; when that
// failed too, nothing woke it (the only VCPUs that could raise a request were the paused
// ones) and the guest stood still until the stop.
TEST(xen_e2e, answers_whose_notify_keeps_failing_reach_xen_and_the_guest_runs_to_its_end) {
  xen_scenario s;
  auto dom = s.add("guest", 2, 100000, step_mode::fast);
  auto reports = s.run([&] { s.xen.fail_next("xenevtchn_notify", EIO, 20); });
  EXPECT_TRUE(s.all_halted()) << "the guest ran its whole budget: no VCPU stayed paused";
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_GT(reports[0].totals.respond_failures, 0u) << "the refused responses are counted";
  reports[0].totals.respond_failures = 0;  // counted; and nothing was lost for it:
  EXPECT_TRUE(s.verified(reports));
  s.expect_clean();
}

TEST(xen_e2e, a_notify_streak_at_the_stop_is_retried_before_the_monitor_goes) {
  xen_scenario s;
  s.add("endless", 4, 0, step_mode::fast);
  auto reports = s.run_until([&](engine& e) {
    auto p = e.progress();
    if (p.empty() || p[0].events < 20000)
      return false;
    s.xen.fail_next("xenevtchn_notify", EIO, 8);  // the stop meets them
    return true;
  });
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_TRUE(reports[0].error.empty()) << reports[0].error;
  reports[0].totals.respond_failures = 0;
  EXPECT_TRUE(s.verified(reports));
  s.expect_clean();  // no "VCPUs still wait for an answer" at xc_monitor_disable
}

TEST(xen_e2e, a_bad_version_request_from_xen_is_answered_with_a_plain_resume_and_counted) {
  xen_scenario s;
  auto dom = s.add("v", 2, 0);
  auto reports = s.run_until([](engine& eng) { return scenario::malformed_counted(eng) >= 1; },
                             [&] { dom->inject_malformed(0, sim::malformed_kind::bad_version); });
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_TRUE(s.verified(reports));
  EXPECT_EQ(reports[0].totals.malformed, 1u);
  EXPECT_EQ(s.xen.responses_dropped(), 0u) << "the answer is in Xen's version: Xen applies it";
  s.expect_clean();
}

TEST(xen_e2e, malformed_requests_are_answered_and_counted) {
  xen_scenario s;
  auto dom = s.add("m", 2, 0);
  auto reports = s.run_with_malformed_requests(dom);
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_TRUE(s.verified(reports));
  EXPECT_EQ(reports[0].totals.malformed, 3u);
  EXPECT_EQ(s.xen.responses_dropped(), 1u) << "only the answer naming a VCPU the domain lacks";
  s.expect_clean();
}

TEST(xen_e2e, an_access_change_failing_midway_arms_the_applied_prefix_and_hits_stay_exact) {
  xen_scenario s;
  // Code on several pages (the default workload fits in two), so a reload can add
  // breakpoints on pages nothing monitors yet.
  sim::domain_config dc;
  dc.name = "f";
  dc.workload.functions = 400;
  auto dom = *s.hv->create_domain(dc);
  engine_config::domain_entry entry;
  entry.select.name = dc.name;
  entry.plan = hot_plan(dom->code(), step_mode::fast, false);
  s.cfg.domains.push_back(std::move(entry));
  s.domains.push_back(dom);
  engine eng{s.cfg, s.make_driver()};
  ASSERT_FALSE(eng.start());
  ASSERT_TRUE(eventually([&] {
    auto p = eng.progress();
    return !p.empty() && p[0].hits > 0;
  }))
    << "attached and hitting";
  // Three breakpoints on pages nothing monitors yet: one access change each, in one batch.
  auto next = s.cfg;
  auto plan = std::make_shared<domain_plan>(*s.cfg.domains[0].plan);
  std::set<drv::gfn_t> monitored;
  for (auto& bp : plan->breakpoints)
    monitored.insert(drv::gfn_of(bp.target.pa));
  std::vector<std::string> added;
  for (auto& fn : dom->code().functions()) {
    if (added.size() == 3)
      break;
    if (!monitored.insert(drv::gfn_of(fn.entry_pa)).second)
      continue;
    added.push_back("late" + std::to_string(added.size()));
    plan->breakpoints.push_back(
      {{added.back(), "main", {"test"}, {}, {}, {}, {}}, breakpoint_target::physical(fn.entry_pa)});
  }
  ASSERT_EQ(added.size(), 3u);
  next.domains[0].plan = plan;
  // xc_altp2m_set_mem_access_multi applies the first change, then fails with EIO.
  dom->fail_access_changes(1, 1, EIO);
  auto err = eng.reload(next);
  ASSERT_TRUE(err) << "two breakpoints could not be armed";
  EXPECT_NE(render(err).find("errno 5"), std::string::npos) << render(err);
  auto reports = eng.stop();
  ASSERT_EQ(reports.size(), 1u);
  auto& r = reports[0];
  EXPECT_TRUE(r.error.empty()) << r.error;
  EXPECT_GT(r.totals.hits, 0u);
  EXPECT_EQ(r.access_failures, 2u);
  size_t armed = 0;
  for (auto& bp : r.breakpoints)
    armed += std::find(added.begin(), added.end(), bp.name) != added.end();
  EXPECT_EQ(armed, 1u) << "the applied prefix is armed, the rest reported";
  EXPECT_TRUE(s.verified(reports)) << "the plan's breakpoints stay exact, every page restored";
  s.expect_clean();
}
