// End-to-end: the whole engine, with real threads, on the simulated hypervisor. Every
// scenario checks hits against ground truth and the invariants (answered = raised, no VCPU
// paused, no page changed).

#include "drivers/sim/sim_driver.hpp"
#include "engine/demo.hpp"
#include "engine/error.hpp"

#include <gtest/gtest.h>

#include <csignal>
#include <cstdio>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

using namespace vmitap;
using namespace std::chrono_literals;

namespace {

struct scenario {
  std::shared_ptr<sim::hypervisor> hv = std::make_shared<sim::hypervisor>();
  engine_config cfg = [] {
    engine_config c;
    c.metrics_listen = "";  // tests run in parallel: no fixed port
    return c;
  }();
  std::vector<std::shared_ptr<sim::domain>> domains;

  std::shared_ptr<sim::domain> add(std::string name, uint32_t vcpus, uint64_t budget,
                                   step_mode mode = step_mode::fast, bool two_views = false) {
    sim::domain_config dc;
    dc.name = std::move(name);
    dc.vcpus = vcpus;
    dc.instructions_per_vcpu = budget;
    dc.workload.seed = 1000 + domains.size();
    auto dom = hv->create_domain(dc);
    cfg.domains.push_back(demo_entry(*dom, mode, two_views));
    domains.push_back(dom);
    return dom;
  }

  bool all_halted() {
    for (auto& d : domains)
      if (d->state() == drv::domain_state::running && !d->halted())
        return false;
    return true;
  }

  /// Runs the engine until every VCPU used its budget (or `limit`), then stops it.
  std::vector<domain_report> run(std::function<void()> midway = {},
                                 std::chrono::milliseconds limit = 60s) {
    engine eng{cfg, std::make_shared<sim::sim_driver>(hv)};
    auto err = eng.start();
    EXPECT_FALSE(err) << render(err);
    auto t0 = std::chrono::steady_clock::now();
    bool called = false;
    while (!all_halted() && std::chrono::steady_clock::now() - t0 < limit) {
      std::this_thread::sleep_for(5ms);
      if (midway && !called && std::chrono::steady_clock::now() - t0 > 50ms) {
        midway();
        called = true;
      }
    }
    return eng.stop();
  }

  bool verified(const std::vector<domain_report>& reports) {
    auto* devnull = std::fopen("/dev/null", "w");
    bool ok = verify_and_print(*hv, reports, domains.size(), devnull);
    std::fclose(devnull);
    if (!ok)
      verify_and_print(*hv, reports, domains.size(), stdout);  // show the rows when it fails
    return ok;
  }
};

const breakpoint_ptr& find_bp(const domain_report& r, const std::string& name) {
  for (auto& bp : r.breakpoints)
    if (bp->spec.name == name)
      return bp;
  throw std::runtime_error("no breakpoint " + name);
}

}  // namespace

class step_modes : public ::testing::TestWithParam<step_mode> {};

TEST_P(step_modes, hits_on_exact_addresses_equal_ground_truth_and_neighbours_step_over) {
  scenario s;
  auto dom = s.add("guest", 2, 200000, GetParam());
  auto reports = s.run();
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_TRUE(s.verified(reports));
  auto& r = reports[0];
  EXPECT_GT(r.totals.hits, 100u);
  EXPECT_GT(r.totals.neighbours, r.totals.hits) << "other instructions on the pages trap too";
  EXPECT_EQ(find_bp(r, "fn0_entry")->hits->load(),
            dom->executions(find_bp(r, "fn0_entry")->spec.pa, find_bp(r, "fn0_entry")->spec.view));
  auto traps = r.totals.hits + r.totals.neighbours;
  if (GetParam() == step_mode::classic)
    EXPECT_EQ(r.totals.singlesteps, traps) << "two events per trap";
  else
    EXPECT_EQ(r.totals.singlesteps, 0u) << "one event per trap";
  EXPECT_EQ(dom->instructions_retired(), 400000u);
}

INSTANTIATE_TEST_SUITE_P(both, step_modes, ::testing::Values(step_mode::classic, step_mode::fast),
                         [](auto& info) { return std::string(to_string(info.param)); });

TEST(engine_e2e, same_address_in_two_views_is_counted_per_view) {
  scenario s;
  s.add("guest", 2, 200000, step_mode::fast, true);
  auto reports = s.run();
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_TRUE(s.verified(reports));
  auto& main = find_bp(reports[0], "fn0_entry");
  auto& shadow = find_bp(reports[0], "fn0_entry_shadow");
  EXPECT_EQ(main->spec.pa, shadow->spec.pa);
  EXPECT_NE(main->spec.view, shadow->spec.view);
  EXPECT_GT(main->hits->load(), 0u);
  EXPECT_GT(shadow->hits->load(), 0u);
}

TEST(engine_e2e, eight_domains_of_four_vcpus_concurrently_exact) {
  scenario s;
  for (int i = 0; i < 8; ++i)
    s.add("dom-" + std::to_string(i), 4, 60000, i % 2 ? step_mode::classic : step_mode::fast);
  auto reports = s.run();
  ASSERT_EQ(reports.size(), 8u);
  EXPECT_TRUE(s.verified(reports));
  for (auto& r : reports)
    EXPECT_GT(r.totals.hits, 0u) << r.name;
}

TEST(engine_e2e, a_domain_dying_mid_run_does_not_disturb_the_others) {
  scenario s;
  s.add("a", 2, 300000);
  auto victim = s.add("b", 2, 0);  // runs until it dies
  s.add("c", 2, 300000);
  auto reports = s.run([&] { victim->kill(); });
  ASSERT_EQ(reports.size(), 3u);
  EXPECT_TRUE(s.verified(reports));
  for (auto& r : reports) {
    EXPECT_EQ(r.died, r.name == "b") << r.name;
    EXPECT_TRUE(r.error.empty()) << r.name << ": " << r.error;
  }
  EXPECT_EQ(victim->state(), drv::domain_state::dead);
}

TEST(engine_e2e, detach_mid_flood_leaves_no_vcpu_paused_and_no_page_changed) {
  scenario s;
  s.add("x", 4, 0, step_mode::classic);  // unlimited: stopped while flooding
  s.add("y", 2, 0, step_mode::fast, true);
  auto reports = s.run({}, 300ms);
  ASSERT_EQ(reports.size(), 2u);
  EXPECT_TRUE(s.verified(reports));
  for (auto& d : s.domains) {
    auto inv = d->check();
    EXPECT_TRUE(inv.holds());
    EXPECT_EQ(inv.answered_by_detach, 0u) << "the engine answered everything itself";
    EXPECT_GT(inv.requests_raised, 1000u);
    for (uint32_t v = 0; v < d->config().vcpus; ++v) {
      EXPECT_EQ(d->vcpu_view(v), 0);
      EXPECT_FALSE(d->vcpu_singlestepping(v));
    }
  }
}

TEST(engine_e2e, malformed_requests_are_answered_and_counted) {
  scenario s;
  auto dom = s.add("m", 2, 0);
  auto reports = s.run(
    [&] {
      dom->inject_malformed(0, sim::malformed_kind::bad_version);
      dom->inject_malformed(1, sim::malformed_kind::unknown_reason);
      dom->inject_malformed(0, sim::malformed_kind::vcpu_out_of_range);
    },
    300ms);
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_TRUE(s.verified(reports));
  EXPECT_EQ(reports[0].totals.malformed, 3u);
}

TEST(engine_e2e, domains_starting_later_are_attached_by_pattern) {
  scenario s;
  s.add("first", 1, 100000);
  s.cfg.domains[0].select = {std::nullopt, "", "*"};  // every domain, also later ones
  engine eng{s.cfg, std::make_shared<sim::sim_driver>(s.hv)};
  ASSERT_FALSE(eng.start());
  sim::domain_config dc;
  dc.name = "late";
  dc.vcpus = 2;
  dc.instructions_per_vcpu = 100000;
  dc.workload.seed = 1000;  // same code as "first": the plan's addresses fit
  s.domains.push_back(s.hv->create_domain(dc));
  for (int i = 0; i < 2000 && !s.all_halted(); ++i)
    std::this_thread::sleep_for(5ms);
  auto reports = eng.stop();
  ASSERT_EQ(reports.size(), 2u);
  EXPECT_TRUE(s.verified(reports));
}

TEST(engine_e2e, failing_access_change_at_attach_is_reported_and_guest_left_unchanged) {
  scenario s;
  auto dom = s.add("f", 1, 0);
  dom->fail_access_changes(1, 0, EIO);
  auto reports = s.run({}, 200ms);
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_NE(reports[0].error.find("errno 5"), std::string::npos) << reports[0].error;
  EXPECT_TRUE(reports[0].breakpoints.empty()) << "no breakpoint is armed";
  EXPECT_TRUE(dom->check().holds());
}

TEST(engine_e2e, sigterm_during_a_flood_detaches_and_exits_clean) {
  int out[2];
  ASSERT_EQ(pipe(out), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    dup2(out[1], STDOUT_FILENO);
    execl(VMITAP_BINARY, VMITAP_BINARY, "run", "--instructions", "1000000000", "--hits", "",
          "--metrics", "127.0.0.1:0", static_cast<char*>(nullptr));
    _exit(127);
  }
  close(out[1]);
  std::this_thread::sleep_for(1500ms);
  kill(pid, SIGTERM);
  std::string text;
  char buf[4096];
  for (ssize_t n; (n = read(out[0], buf, sizeof buf)) > 0;)
    text.append(buf, size_t(n));
  close(out[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status)) << text;
  EXPECT_EQ(WEXITSTATUS(status), 0) << text;
  EXPECT_NE(text.find("stopped by signal"), std::string::npos) << text;
  EXPECT_NE(text.find("verified:"), std::string::npos) << text;
}

TEST(engine_e2e, a_domain_without_breakpoints_is_attached_and_counted) {
  scenario s;
  s.add("empty", 2, 50000);
  s.cfg.domains[0].plan.breakpoints.clear();
  engine eng{s.cfg, std::make_shared<sim::sim_driver>(s.hv)};
  ASSERT_FALSE(eng.start());
  for (int i = 0; i < 400 && eng.metrics().domains_monitored().Value() < 1; ++i)
    std::this_thread::sleep_for(5ms);
  EXPECT_EQ(eng.metrics().domains_monitored().Value(), 1) << "the attach was answered";
  EXPECT_EQ(eng.metrics().domain_attach(true).Value(), 1);
  auto reports = eng.stop();
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_TRUE(reports[0].error.empty()) << reports[0].error;
  EXPECT_TRUE(s.verified(reports));
}
