// End to end: the whole engine, with real threads, on the simulated hypervisor. Every
// scenario checks hits against ground truth and the invariants (answered = raised, no VCPU
// paused, no page changed), on the happy path and off it.

#include "tests/support/scenario.hpp"

#include <csignal>

using namespace vmitap;
using namespace vmitap::testing;
using namespace std::chrono_literals;

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
  auto& fn0 = find_bp(r, "fn0_entry");
  EXPECT_EQ(fn0.hits, dom->executions(fn0.pa, fn0.view));
  if (GetParam() == step_mode::classic)
    EXPECT_EQ(r.totals.singlesteps * 2, r.totals.events) << "two events per trap";
  else
    EXPECT_EQ(r.totals.singlesteps, 0u) << "one event per trap";
  EXPECT_EQ(dom->instructions_retired(), 400000u);
}

INSTANTIATE_TEST_SUITE_P(every, step_modes,
                         ::testing::Values(step_mode::classic, step_mode::fast, step_mode::emulate),
                         [](auto& info) { return std::string(to_string(info.param)); });

TEST(engine_e2e, same_address_in_two_views_is_counted_per_view) {
  scenario s;
  s.add("guest", 2, 200000, step_mode::fast, true);
  auto reports = s.run();
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_TRUE(s.verified(reports));
  auto& main = find_bp(reports[0], "fn0_entry");
  auto& shadow = find_bp(reports[0], "fn0_entry_shadow");
  EXPECT_EQ(main.pa, shadow.pa);
  EXPECT_NE(main.view, shadow.view);
  EXPECT_GT(main.hits, 0u);
  EXPECT_GT(shadow.hits, 0u);
}

// Regression (issue 8): a VCPU whose home is not the first view never got there if it never
// trapped in the first view.
TEST(engine_e2e, a_vcpu_reaches_its_home_view_even_if_the_first_view_has_no_breakpoints) {
  for (auto mode : {step_mode::fast, step_mode::classic, step_mode::emulate}) {
    scenario s;
    auto dom = s.add("guest", 2, 100000, mode);
    auto plan = std::make_shared<domain_plan>();
    plan->mode = mode;
    plan->views = {"main", "shadow"};
    plan->vcpu_views[1] = "shadow";
    plan->breakpoints = {{{"only_in_shadow", "shadow", {}, {}, {}, {}, {}},
                          breakpoint_target::physical(dom->code().functions()[0].entry_pa)}};
    s.cfg.domains[0].plan = plan;
    auto reports = s.run();
    ASSERT_EQ(reports.size(), 1u);
    EXPECT_TRUE(s.verified(reports));
    EXPECT_GT(find_bp(reports[0], "only_in_shadow").hits, 0u) << to_string(mode);
  }
}

TEST(engine_e2e, eight_domains_of_four_vcpus_concurrently_exact) {
  scenario s;
  for (int i = 0; i < 8; ++i)
    s.add("dom-" + std::to_string(i), 4, 60000, step_mode(i % 3));
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

// Regression (issue 8): a domain rebooting under its name crashed vmitap (metric series keyed
// by name, shared and then removed by the old session: use-after-free).
TEST(engine_e2e, a_domain_rebooting_under_its_name_is_attached_again_and_stays_exact) {
  scenario s;
  auto first = s.add("web", 2, 0);
  std::shared_ptr<sim::domain> second;
  engine eng{s.cfg, std::make_shared<sim::sim_driver>(s.hv)};
  ASSERT_FALSE(eng.start());
  for (int i = 0; i < 400 && eng.counters().domains_monitored.load() < 1; ++i)
    std::this_thread::sleep_for(5ms);
  for (int round = 0; round < 3; ++round) {
    std::this_thread::sleep_for(50ms);
    auto families = eng.collect();  // a scrape while sessions come and go
    EXPECT_FALSE(families.empty());
    second = s.hv->restart_domain((second ? second : first)->id());
    ASSERT_TRUE(second);
  }
  for (int i = 0; i < 400 && eng.progress().size() != 1; ++i)
    std::this_thread::sleep_for(5ms);
  std::this_thread::sleep_for(50ms);
  auto reports = eng.stop();
  ASSERT_EQ(reports.size(), 4u) << "one report per session";
  size_t died = 0;
  for (auto& r : reports) {
    died += r.died;
    EXPECT_TRUE(r.error.empty()) << r.error;
  }
  EXPECT_EQ(died, 3u);
  EXPECT_TRUE(second->check().holds());
  EXPECT_TRUE(s.verified({reports.back()}, s.cfg));
}

TEST(engine_e2e, detach_mid_flood_leaves_no_vcpu_paused_and_no_page_changed) {
  scenario s;
  s.add("x", 4, 0, step_mode::classic);  // unlimited: stopped while flooding
  s.add("y", 2, 0, step_mode::fast, true);
  s.add("z", 2, 0, step_mode::emulate);
  auto reports = s.run_until([&](engine&) { return s.each_raised_more_than(1000); });
  ASSERT_EQ(reports.size(), 3u);
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

// Regression (issue 8): a stop that came while domains attached counted them as monitored
// and could leave one attached.
TEST(engine_e2e, a_stop_during_attach_detaches_whatever_was_attached) {
  for (int round = 0; round < 5; ++round) {
    scenario s;
    for (int i = 0; i < 4; ++i)
      s.add("d" + std::to_string(i), 2, 0, step_mode(i % 3));
    engine eng{s.cfg, std::make_shared<sim::sim_driver>(s.hv)};
    ASSERT_FALSE(eng.start());
    std::this_thread::sleep_for(std::chrono::microseconds(200 * round));
    auto reports = eng.stop();
    EXPECT_EQ(eng.counters().domains_monitored.load(), 0);
    EXPECT_EQ(reports.size(), 4u);
    for (auto& d : s.domains) {
      auto inv = d->check();
      EXPECT_TRUE(inv.holds()) << "round " << round;
      EXPECT_EQ(inv.answered_by_detach, 0u);
    }
  }
}

TEST(engine_e2e, malformed_requests_are_answered_and_counted) {
  scenario s;
  auto dom = s.add("m", 2, 0);
  auto reports = s.run_with_malformed_requests(dom);
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
  s.domains.push_back(*s.hv->create_domain(dc));
  for (int i = 0; i < 2000 && !s.all_halted(); ++i)
    std::this_thread::sleep_for(5ms);
  auto reports = eng.stop();
  ASSERT_EQ(reports.size(), 2u);
  EXPECT_TRUE(s.verified(reports));
}

/// The sim's driver, except that a domain whose name starts with "brief" is destroyed just as
/// vmitap attaches it (on Xen: destroyed between the watch's report and the attach).
class gone_at_attach final : public drv::driver {
public:
  explicit gone_at_attach(std::shared_ptr<sim::hypervisor> hv) :
    hv_(hv), inner_(std::make_shared<sim::sim_driver>(hv)) {}
  std::string name() const override { return inner_->name(); }
  drv::capabilities caps() const override { return inner_->caps(); }
  caf::expected<std::vector<drv::domain_info>> list_domains() override {
    return inner_->list_domains();
  }
  caf::error watch(std::function<void(const drv::domain_change&)> fn) override {
    return inner_->watch(std::move(fn));
  }
  void unwatch() override { inner_->unwatch(); }
  caf::expected<std::unique_ptr<drv::domain_session>> attach(drv::domain_id id) override {
    if (auto d = hv_->find(id); d && d->info().name.rfind("brief", 0) == 0)
      hv_->destroy_domain(id);
    return inner_->attach(id);
  }

private:
  std::shared_ptr<sim::hypervisor> hv_;
  std::shared_ptr<sim::sim_driver> inner_;
};

// Regression (issue 13, campaign seed 1290): a domain destroyed before its attach completed
// was reported as a failed attach ("no_such_domain: attach: no domain N"), so a summary
// showed an error where a domain had only gone away. It is reported as having died.
TEST(engine_e2e, a_domain_gone_before_its_attach_completes_died_and_nothing_failed) {
  scenario s;
  s.add("first", 1, 0);
  s.cfg.domains[0].select = {std::nullopt, "", "*"};  // every domain, also later ones
  s.make_driver = [&] { return std::make_shared<gone_at_attach>(s.hv); };
  engine eng{s.cfg, s.make_driver()};
  ASSERT_FALSE(eng.start());
  sim::domain_config dc;
  dc.vcpus = 2;
  dc.workload.seed = 1000;  // same code as "first": the plan's addresses fit
  for (int i = 0; i < 5; ++i) {
    dc.name = "brief-" + std::to_string(i);
    ASSERT_TRUE(s.hv->create_domain(dc));
  }
  EXPECT_TRUE(eventually([&] { return eng.status().size() >= 6; })) << "every domain reported";
  auto reports = eng.stop();
  EXPECT_EQ(eng.counters().attach_failed.get(), 0u);
  ASSERT_EQ(reports.size(), 6u);
  for (auto& r : reports) {
    EXPECT_TRUE(r.error.empty()) << r.name << " (" << r.id << "): " << r.error;
    EXPECT_EQ(r.died, r.name != "first") << r.name << " (" << r.id << ")";
  }
  EXPECT_TRUE(s.domains[0]->check().holds());
}

TEST(engine_e2e, a_domain_without_breakpoints_is_attached_and_counted) {
  scenario s;
  s.add("empty", 2, 50000);
  std::const_pointer_cast<domain_plan>(s.cfg.domains[0].plan)->breakpoints.clear();
  engine eng{s.cfg, std::make_shared<sim::sim_driver>(s.hv)};
  ASSERT_FALSE(eng.start());
  for (int i = 0; i < 400 && eng.counters().domains_monitored.load() < 1; ++i)
    std::this_thread::sleep_for(5ms);
  EXPECT_EQ(eng.counters().domains_monitored.load(), 1) << "the attach was answered";
  EXPECT_EQ(eng.counters().attach_ok.get(), 1u);
  auto reports = eng.stop();
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_TRUE(reports[0].error.empty()) << reports[0].error;
  EXPECT_TRUE(s.verified(reports));
}

TEST(engine_e2e, breakpoints_added_and_removed_live_keep_hits_exact) {
  scenario s;
  auto dom = s.add("live", 2, 0);
  auto f = dom->code().functions();
  auto keep = f[0].entry_pa, removed = dom->code().at(f[0].first + 1).pa, added = f[3].entry_pa;
  auto plan = std::make_shared<domain_plan>();
  plan->breakpoints = {
    {{"keep", "main", {}, {}, {}, {}, {}}, breakpoint_target::physical(keep)},
    {{"removed", "main", {}, {}, {}, {}, {}}, breakpoint_target::physical(removed)}};
  s.cfg.domains[0].plan = plan;
  engine eng{s.cfg, std::make_shared<sim::sim_driver>(s.hv)};
  ASSERT_FALSE(eng.start());
  auto hits = [&] {
    std::map<std::string, uint64_t> out;
    for (auto& r : eng.status())
      for (auto& bp : r.breakpoints)
        out[bp.name] = bp.hits;
    return out;
  };
  auto reached = [&](uint64_t pa) { return dom->reached(pa, 1); };
  std::map<std::string, uint64_t> before;  // every request raised before status() is counted
  EXPECT_TRUE(eventually([&] {
    before = hits();
    return before["keep"] > 0 && before["removed"] > 0;
  }))
    << "both armed breakpoints are hit";
  auto next = s.cfg;
  auto plan2 = std::make_shared<domain_plan>(*plan);
  plan2->breakpoints = {
    {{"keep", "main", {}, {}, {}, {}, {}}, breakpoint_target::physical(keep)},
    {{"added", "main", {}, {}, {}, {}, {}}, breakpoint_target::physical(added)}};
  next.domains[0].plan = plan2;
  ASSERT_FALSE(eng.reload(next));
  std::map<std::string, uint64_t> after;
  EXPECT_TRUE(eventually([&] {
    after = hits();
    return after["added"] > 0 && reached(removed) > before["removed"];
  }))
    << "the added breakpoint is hit; the removed address runs on, unarmed";
  EXPECT_EQ(after.count("removed"), 0u);
  EXPECT_GT(after["added"], 0u);
  auto reports = eng.stop();
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_TRUE(reports[0].error.empty()) << reports[0].error;
  EXPECT_EQ(find_bp(reports[0], "keep").hits, reached(keep)) << "armed throughout";
  EXPECT_TRUE(find_bp(reports[0], "added").live);
  EXPECT_GT(reached(removed), before["removed"]) << "it kept running, unarmed";
  auto inv = dom->check();
  EXPECT_TRUE(inv.holds());
  EXPECT_EQ(inv.answered_by_detach, 0u);
}

// Regression (issue 8): a reload that re-attached a domain crashed vmitap, and the old
// session's teardown detached the new attachment.
TEST(engine_e2e, a_reload_that_reattaches_a_domain_leaves_the_new_session_running) {
  scenario s;
  auto dom = s.add("r", 2, 0, step_mode::fast);
  engine eng{s.cfg, std::make_shared<sim::sim_driver>(s.hv)};
  ASSERT_FALSE(eng.start());
  std::this_thread::sleep_for(100ms);
  for (auto mode : {step_mode::classic, step_mode::emulate, step_mode::fast}) {
    auto next = s.cfg;
    auto plan = std::make_shared<domain_plan>(*s.cfg.domains[0].plan);
    plan->mode = mode;
    next.domains[0].plan = plan;
    ASSERT_FALSE(eng.reload(next)) << to_string(mode);
    for (int i = 0; i < 400 && eng.counters().domains_monitored.load() < 1; ++i)
      std::this_thread::sleep_for(5ms);
    auto retired = dom->instructions_retired();
    EXPECT_TRUE(eventually([&] { return dom->instructions_retired() > retired; }))
      << "the guest runs under the new session";
    EXPECT_EQ(eng.progress().size(), 1u);
  }
  auto reports = eng.stop();
  EXPECT_EQ(reports.size(), 4u);
  for (auto& r : reports)
    EXPECT_TRUE(r.error.empty()) << r.error;
  auto inv = dom->check();
  EXPECT_TRUE(inv.holds());
  EXPECT_EQ(inv.answered_by_detach, 0u);
}

// Regression (issue 8): ended sessions' reports grew without bound.
TEST(engine_e2e, ended_reports_are_bounded) {
  scenario s;
  auto dom = s.add("churn", 1, 0);
  s.cfg.ended_reports_kept = 2;
  engine eng{s.cfg, std::make_shared<sim::sim_driver>(s.hv)};
  ASSERT_FALSE(eng.start());
  auto current = dom;
  auto attached = [&] {  // the current session is monitored before its domain restarts
    return eventually([&] {
      for (auto& p : eng.progress())
        if (p.id == current->id())
          return true;
      return false;
    });
  };
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(attached());
    current = s.hv->restart_domain(current->id());
  }
  ASSERT_TRUE(attached());
  // The stop folds nothing: wait until the five dead sessions' detaches have ended (a dead
  // domain's detach can finish after its successor attached), six sessions in all.
  ASSERT_TRUE(eventually([&] {
    uint32_t sessions = 0;
    for (auto& r : eng.status())
      sessions += r.sessions;
    return sessions == 6;
  }));
  auto reports = eng.stop();
  ASSERT_EQ(reports.size(), 4u)
    << "the three oldest folded into one, the two most recent ended sessions and the live one";
  EXPECT_EQ(reports.front().sessions, 3u);
  EXPECT_EQ(reports.front().name, "churn");
  EXPECT_EQ(reports.back().id, current->id());
}

// Regression (issue 21): past ended_reports_kept the oldest reports were dropped, so a domain
// re-attached by reloads was verified by its last session alone against its whole life's
// ground truth: "MISMATCH" and exit 1 for a correct run.
TEST(engine_e2e, sessions_past_the_bound_are_folded_and_the_summary_loses_no_counts) {
  scenario s;
  s.add("a", 1, 0);
  s.add("b", 1, 0);
  s.cfg.ended_reports_kept = 1;
  engine eng{s.cfg, std::make_shared<sim::sim_driver>(s.hv)};
  ASSERT_FALSE(eng.start());
  auto hits_of = [&](const std::string& name) {
    for (auto& p : eng.progress())
      if (p.name == name)
        return p.hits;
    return uint64_t{0};
  };
  for (int round = 0; round < 4; ++round) {
    // Each round re-attaches both domains: a changed step mode needs new views.
    ASSERT_TRUE(eventually([&] { return hits_of("a") > 0 && hits_of("b") > 0; }));
    auto next = s.cfg;
    for (auto& d : next.domains) {
      auto plan = std::make_shared<domain_plan>(*d.plan);
      plan->mode = round % 2 ? step_mode::fast : step_mode::classic;
      plan->mode_chosen = true;
      d.plan = plan;
    }
    ASSERT_FALSE(eng.reload(next));
  }
  auto reports = eng.stop();
  uint64_t sessions = 0, hits = 0;
  for (auto& r : reports) {
    sessions += r.sessions;
    if (r.name == "a")
      hits += r.totals.hits;
  }
  EXPECT_EQ(sessions, 10u) << "five sessions of each domain, none left out";
  EXPECT_GT(hits, 0u);
  EXPECT_LT(reports.size(), 10u) << "folded, not kept apart";
  EXPECT_TRUE(s.verified(reports));
}

// Regression (issue 8): the stop's summary was cut to ended_reports_kept, so with more live
// domains than that, sessions went unreported (and unverified).
TEST(engine_e2e, every_session_the_stop_detaches_reports_whatever_the_bound) {
  scenario s;
  for (int i = 0; i < 3; ++i)
    s.add("live" + std::to_string(i), 1, 0);
  s.cfg.ended_reports_kept = 1;
  engine eng{s.cfg, std::make_shared<sim::sim_driver>(s.hv)};
  ASSERT_FALSE(eng.start());
  EXPECT_TRUE(eventually([&] { return eng.counters().domains_monitored.load() == 3; }));
  auto reports = eng.stop();
  EXPECT_EQ(reports.size(), 3u);
  EXPECT_TRUE(s.verified(reports));
}

// Regression (issue 21): summary rows were cut at 511 characters, so long names lost their
// hit and ground-truth columns.
TEST(engine_e2e, summary_rows_keep_every_column_whatever_the_names_length) {
  scenario s;
  s.add(std::string(300, 'd'), 1, 20000);
  auto plan = std::make_shared<domain_plan>(*s.cfg.domains[0].plan);
  auto long_name = std::string(600, 'b');
  plan->breakpoints[0].options.name = long_name;
  s.cfg.domains[0].plan = plan;
  auto reports = s.run();
  char* buf = nullptr;
  size_t len = 0;
  auto* out = open_memstream(&buf, &len);
  bool ok = sim_truth(s.hv, s.cfg)->verify(reports, out);
  std::fclose(out);
  std::string table(buf, len);
  std::free(buf);
  EXPECT_TRUE(ok) << table;
  auto row = table.find(long_name);
  ASSERT_NE(row, std::string::npos);
  auto line = table.substr(row, table.find('\n', row) - row);
  EXPECT_TRUE(line.ends_with("exact")) << line.substr(long_name.size());
}

// Regression (issue 20): overlapping entries armed only the first entry's breakpoints and the
// run ended "verified". Entries check cannot see overlap (patterns against patterns on Xen)
// leave the domain unattached with an error the summary, the metrics and the verdict carry.
TEST(engine_e2e, a_domain_two_entries_select_is_not_attached_and_the_run_fails_saying_why) {
  scenario s;
  s.add("web-1", 1, 20000);
  engine_config::domain_entry also;
  also.select.pattern = "web-*";
  also.plan = s.cfg.domains[0].plan;
  s.cfg.domains[0].select = {};
  s.cfg.domains[0].select.pattern = "w*";
  s.cfg.domains.push_back(also);
  engine eng{s.cfg, s.make_driver()};
  ASSERT_FALSE(eng.start());
  ASSERT_TRUE(eventually([&] { return eng.counters().attach_failed.get() == 1; }));
  // Reloads that keep both entries do not say it again.
  ASSERT_FALSE(eng.reload(s.cfg));
  ASSERT_FALSE(eng.reload(s.cfg));
  auto reports = eng.stop();
  EXPECT_EQ(eng.counters().attach_failed.get(), 1u);
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_NE(reports[0].error.find("selected by more than one [[domain]] entry: pattern=w*, "
                                  "pattern=web-*"),
            std::string::npos)
    << reports[0].error;
  EXPECT_FALSE(s.verified(reports));
}

// Regression (issue 20): the verification compared only the breakpoints that were armed, so
// one the config named but nothing armed went unnoticed.
TEST(engine_e2e, the_verification_fails_for_a_configured_breakpoint_never_armed) {
  scenario s;
  auto dom = s.add("g", 1, 20000);
  auto reports = s.run();
  ASSERT_TRUE(s.verified(reports));
  auto configured = s.cfg;
  auto plan = std::make_shared<domain_plan>(*configured.domains[0].plan);
  plan->breakpoints.push_back({{"forgotten", "main", {}, {}, {}, {}, {}},
                               breakpoint_target::physical(dom->code().functions()[7].entry_pa)});
  configured.domains[0].plan = plan;
  EXPECT_FALSE(s.verified(reports, configured)) << "\"forgotten\" was configured, never armed";
}
