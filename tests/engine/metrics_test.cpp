// Metric values after a known scenario equal what the sim's ground truth says; series come
// and go with their domain; the exporter reports a bad or taken address clearly.

#include "drivers/sim/sim_driver.hpp"
#include "engine/demo.hpp"
#include "engine/error.hpp"

#include <gtest/gtest.h>

#include <thread>

using namespace vmitap;
using namespace std::chrono_literals;

namespace {

/// Sum of every sample of `family` whose labels include all of `want`.
double value(const std::vector<prometheus::MetricFamily>& families, const std::string& family,
             const std::map<std::string, std::string>& want = {}) {
  double sum = 0;
  for (auto& f : families) {
    if (f.name != family)
      continue;
    for (auto& m : f.metric) {
      size_t matched = 0;
      for (auto& l : m.label)
        matched += want.count(l.name) && want.at(l.name) == l.value;
      if (matched == want.size())
        sum += f.type == prometheus::MetricType::Counter ? m.counter.value : m.gauge.value;
    }
  }
  return sum;
}

size_t series(const std::vector<prometheus::MetricFamily>& families, const std::string& family) {
  for (auto& f : families)
    if (f.name == family)
      return f.metric.size();
  return 0;
}

}  // namespace

TEST(metrics, counters_equal_ground_truth_after_a_known_scenario) {
  auto hv = std::make_shared<sim::hypervisor>();
  engine_config cfg;
  cfg.metrics_listen = "";
  std::vector<std::shared_ptr<sim::domain>> doms;
  for (int i = 0; i < 2; ++i) {
    sim::domain_config dc;
    dc.name = "m" + std::to_string(i);
    dc.vcpus = 2;
    dc.instructions_per_vcpu = 100000;
    dc.workload.seed = 50 + i;
    doms.push_back(hv->create_domain(dc));
    cfg.domains.push_back(demo_entry(*doms.back(), i ? step_mode::classic : step_mode::fast, i == 0));
  }
  engine eng{cfg, std::make_shared<sim::sim_driver>(hv)};
  ASSERT_FALSE(eng.start());
  for (int i = 0; i < 4000 && !(doms[0]->halted() && doms[1]->halted()); ++i)
    std::this_thread::sleep_for(5ms);
  auto reports = eng.status();  // drains every VCPU actor: all events are counted
  ASSERT_EQ(reports.size(), 2u);
  auto families = eng.metrics().registry()->Collect();
  EXPECT_EQ(value(families, "vmitap_domains_monitored"), 2);
  EXPECT_EQ(value(families, "vmitap_domain_attach_total", {{"result", "ok"}}), 2);
  for (auto& r : reports) {
    auto dom = hv->find(r.id);
    auto inv = dom->check();
    std::map<std::string, std::string> d{{"domain", r.name}};
    EXPECT_EQ(value(families, "vmitap_events_total", d), double(inv.requests_raised)) << r.name;
    EXPECT_EQ(value(families, "vmitap_page_neighbour_events_total", d), double(r.totals.neighbours));
    EXPECT_EQ(value(families, "vmitap_stale_events_total", d), 0);
    EXPECT_EQ(value(families, "vmitap_malformed_events_total", d), 0);
    EXPECT_EQ(value(families, "vmitap_access_changes_total", {{"domain", r.name}, {"result", "failed"}}), 0);
    // One access change per monitored page, in one batched call at attach.
    EXPECT_EQ(value(families, "vmitap_access_changes_total", {{"domain", r.name}, {"result", "ok"}}),
              value(families, "vmitap_monitored_pages", d));
    EXPECT_GT(value(families, "vmitap_monitored_pages", d), 0);
    EXPECT_EQ(value(families, "vmitap_breakpoints", d), double(r.breakpoints.size()));
    for (auto& bp : r.breakpoints) {
      auto truth = dom->executions(bp->spec.pa, bp->spec.view);
      EXPECT_EQ(value(families, "vmitap_breakpoint_hits_total",
                      {{"domain", r.name}, {"breakpoint", bp->spec.name}}),
                double(truth))
        << r.name << " " << bp->spec.name;
    }
  }
  EXPECT_GT(value(families, "vmitap_events_total", {{"domain", "m1"}, {"reason", "singlestep"}}), 0)
    << "classic mode";
  EXPECT_EQ(value(families, "vmitap_events_total", {{"domain", "m0"}, {"reason", "singlestep"}}), 0)
    << "fast mode";
  EXPECT_EQ(value(families, "vmitap_breakpoint_hits_total", {{"view", "shadow"}}),
            double(doms[0]->executions(doms[0]->code().functions()[0].entry_pa, 2)))
    << "views are labelled by name";

  eng.stop();
  families = eng.metrics().registry()->Collect();
  EXPECT_EQ(value(families, "vmitap_domains_monitored"), 0);
  EXPECT_EQ(series(families, "vmitap_events_total"), 0u) << "a domain's series go with it";
  EXPECT_EQ(series(families, "vmitap_breakpoint_hits_total"), 0u);
  EXPECT_EQ(value(families, "vmitap_build_info", {{"version", VMITAP_VERSION}}), 1);
}

TEST(metrics, exporter_on_a_taken_port_or_bad_address_is_a_clear_error) {
  auto hv = std::make_shared<sim::hypervisor>();
  engine_config cfg;
  cfg.metrics_listen = "127.0.0.1:0";
  engine first{cfg, std::make_shared<sim::sim_driver>(hv)};
  ASSERT_FALSE(first.start());
  ASSERT_NE(first.metrics_port(), 0);
  cfg.metrics_listen = "127.0.0.1:" + std::to_string(first.metrics_port());
  engine second{cfg, std::make_shared<sim::sim_driver>(hv)};
  auto err = second.start();
  EXPECT_EQ(code_of(err), ec::invalid_argument);
  EXPECT_NE(render(err).find(cfg.metrics_listen), std::string::npos) << render(err);
  cfg.metrics_listen = "not-an-address";
  engine third{cfg, std::make_shared<sim::sim_driver>(hv)};
  EXPECT_EQ(code_of(third.start()), ec::invalid_argument);
}
