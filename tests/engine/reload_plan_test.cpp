// What a reload changes, as a pure function of the old config, the new one and the domains
// monitored now.

#include "engine/reload_plan.hpp"

#include <gtest/gtest.h>

using namespace vmitap;
using action = reload_plan::domain_action;

namespace {

engine_config::domain_entry entry(std::string pattern, std::vector<std::string> bps,
                                  step_mode mode = step_mode::fast,
                                  std::vector<std::string> sinks = {}) {
  engine_config::domain_entry e;
  e.select.pattern = std::move(pattern);
  auto plan = std::make_shared<domain_plan>();
  plan->mode = mode;
  for (size_t i = 0; i < bps.size(); ++i)
    plan->breakpoints.push_back(breakpoint_def::at(bps[i], 0x100000 + i * 16));
  e.plan = plan;
  e.sinks = std::move(sinks);
  return e;
}

sink_config file_sink(std::string name, std::string path) {
  sink_config s;
  s.name = std::move(name);
  s.type = sink_config::kind::jsonl_file;
  s.path = std::move(path);
  return s;
}

const std::vector<drv::domain_info> running = {{1, "web-1", 2}, {2, "db-1", 4}, {3, "cache", 1}};

}  // namespace

TEST(reload_plan, the_same_config_changes_nothing) {
  engine_config c;
  c.domains = {entry("web-*", {"a"}), entry("db-*", {"b"}), entry("cache", {})};
  auto p = diff(c, c, running);
  EXPECT_TRUE(p.open.empty());
  EXPECT_TRUE(p.close.empty());
  ASSERT_EQ(p.domains.size(), 3u);
  for (auto& a : p.domains)
    EXPECT_EQ(a.kind, action::keep) << a.id;
}

TEST(reload_plan, changed_breakpoints_are_updated_in_place) {
  engine_config before, after;
  before.domains = {entry("web-*", {"a", "b"})};
  after.domains = {entry("web-*", {"a", "c"})};
  auto p = diff(before, after, {running[0]});
  ASSERT_EQ(p.domains.size(), 1u) << "one action per monitored domain";
  EXPECT_EQ(p.domains[0].kind, action::update);
  EXPECT_EQ(p.domains[0].plan, after.domains[0].plan);
}

TEST(reload_plan, a_new_step_mode_or_view_means_attaching_again) {
  engine_config before, after;
  before.domains = {entry("web-*", {"a"}, step_mode::fast)};
  after.domains = {entry("web-*", {"a"}, step_mode::emulate)};
  EXPECT_EQ(diff(before, after, running).domains[0].kind, action::reattach);
  auto views = entry("web-*", {"a"});
  std::const_pointer_cast<domain_plan>(views.plan)->views = {"main", "other"};
  after.domains = {views};
  EXPECT_EQ(diff(before, after, running).domains[0].kind, action::reattach);
}

TEST(reload_plan, a_domain_no_longer_selected_is_detached) {
  engine_config before, after;
  before.domains = {entry("*", {"a"})};
  after.domains = {entry("web-*", {"a"})};
  auto p = diff(before, after, running);  // all three monitored under "*"
  EXPECT_EQ(p.domains[0].kind, action::keep);
  EXPECT_EQ(p.domains[1].kind, action::detach);
  EXPECT_EQ(p.domains[2].kind, action::detach);
}

TEST(reload_plan, a_changed_sink_is_closed_and_opened_and_its_domains_reattached) {
  engine_config before, after;
  before.sinks = {file_sink("hits", "/tmp/a"), file_sink("audit", "/tmp/x")};
  after.sinks = {file_sink("hits", "/tmp/b"), file_sink("audit", "/tmp/x"),
                 file_sink("new", "/tmp/n")};
  before.domains = {entry("web-*", {"a"}, step_mode::fast, {"hits"}),
                    entry("db-*", {"a"}, step_mode::fast, {"audit"})};
  after.domains = before.domains;
  auto p = diff(before, after, {running[0], running[1]});
  ASSERT_EQ(p.close.size(), 1u);
  EXPECT_EQ(p.close[0], "hits");
  ASSERT_EQ(p.open.size(), 2u);
  EXPECT_EQ(p.open[0].path, "/tmp/b");
  EXPECT_EQ(p.open[1].name, "new");
  EXPECT_EQ(p.domains[0].kind, action::reattach) << "web-1 writes to the changed sink";
  EXPECT_EQ(p.domains[1].kind, action::keep) << "db-1's sink did not change";
}

TEST(reload_plan, a_domain_that_switches_sinks_is_reattached) {
  engine_config before, after;
  before.sinks = after.sinks = {file_sink("a", "/tmp/a"), file_sink("b", "/tmp/b")};
  before.domains = {entry("web-*", {"x"}, step_mode::fast, {"a"})};
  after.domains = {entry("web-*", {"x"}, step_mode::fast, {"b"})};
  EXPECT_EQ(diff(before, after, running).domains[0].kind, action::reattach);
}

// Regression (issue 8): a reload handed the engine actor the new stop deadline while the
// facade kept waiting with the old one, so raising it by SIGHUP made the stop time out and
// lose the reports. A reload applies the topology only; the settings stay as started.
TEST(reload_plan, a_reload_keeps_the_engine_settings_and_takes_the_topology) {
  engine_config running_cfg;
  running_cfg.stop_deadline = std::chrono::seconds(20);
  running_cfg.worker_threads = 2;
  running_cfg.domains = {entry("web-*", {"a"})};
  engine_config next = running_cfg;
  next.stop_deadline = std::chrono::seconds(90);
  next.worker_threads = 8;
  next.sinks = {file_sink("hits", "/var/log/x")};
  next.domains = {entry("web-*", {"a", "b"}), entry("db-*", {})};
  EXPECT_FALSE(running_cfg.same_settings(next));
  auto applied = running_cfg.with_topology_of(next);
  EXPECT_EQ(applied.stop_deadline, std::chrono::seconds(20));
  EXPECT_EQ(applied.worker_threads, 2u);
  EXPECT_EQ(applied.sinks, next.sinks);
  ASSERT_EQ(applied.domains.size(), 2u);
  EXPECT_EQ(applied.domains[0].plan->breakpoints.size(), 2u);
  EXPECT_TRUE(running_cfg.same_settings(applied));
}
