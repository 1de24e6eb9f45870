// Rate limits end to end, on the threaded sim: a hot breakpoint with a limit is disarmed for
// its cool-down each time it goes over and re-armed after; its records say how often; every
// other breakpoint stays exact and every invariant holds.

#include "tests/support/metric_values.hpp"
#include "tests/support/scenario.hpp"

#include <nlohmann/json.hpp>

#include <fstream>

using namespace vmitap;
using namespace vmitap::testing;

namespace {

double suppressions(engine& eng, const std::string& breakpoint) {
  return metric_value(eng.collect(), "vmitap_breakpoint_suppressed_total",
                      {{"breakpoint", breakpoint}})
    .value_or(-1);  // no series
}

}  // namespace

TEST(rate_limits, a_breakpoint_over_its_limit_is_disarmed_for_its_cool_down_and_rearmed) {
  scenario s;
  auto dom = s.add("guest", 2, 0);  // runs until the test stops it
  auto hits_path = s.add_jsonl_sink("rate");
  s.cfg.domains[0].sinks = {"hits"};
  constexpr uint32_t max = 40;
  auto plan = std::make_shared<domain_plan>(*s.cfg.domains[0].plan);
  auto pa = dom->code().functions()[0].entry_pa;  // the hottest function
  plan->breakpoints.push_back(
    {{"limited", "main", {}, {}, {}, rate_limit{max, std::chrono::milliseconds(150)}, {}},
     breakpoint_target::physical(pa)});
  s.cfg.domains[0].plan = plan;

  engine eng{s.cfg, s.make_driver()};
  ASSERT_FALSE(eng.start());
  ASSERT_TRUE(eventually([&] { return !eng.progress().empty(); }));
  EXPECT_EQ(suppressions(eng, "fn0_entry"), -1) << "a breakpoint without a limit has no series";
  ASSERT_TRUE(eventually([&] { return suppressions(eng, "limited") >= 3; }));
  auto counted = suppressions(eng, "limited");
  auto reports = eng.stop();
  ASSERT_TRUE(s.verified(reports));  // the others exact; nothing paused, no page changed

  auto& r = reports.at(0);
  auto limited = find_bp(r, "limited");
  auto same_address = find_bp(r, "fn0_entry").hits;
  auto times = limited.suppressions;
  EXPECT_GE(double(times), counted);
  auto hits = limited.hits;
  // It missed the calls of its cool-downs (the unlimited breakpoint at its address did not),
  // and each suppression came after more than `max` hits in its window.
  EXPECT_LT(hits, same_address);
  EXPECT_EQ(same_address, dom->reached(pa, limited.view));
  EXPECT_GE(hits, times * (max + 1));

  // Every hit has a record, and the records count the suppressions before it, in order.
  std::ifstream in(hits_path);
  uint64_t records = 0, last = 0;
  std::map<uint64_t, uint64_t> per_period;
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    if (j["breakpoint"] != "limited") {
      EXPECT_FALSE(j.contains("suppressed"));
      continue;
    }
    auto k = j["suppressed"].get<uint64_t>();
    EXPECT_GE(k, last);
    last = k;
    ++per_period[k];
    ++records;
  }
  EXPECT_EQ(records, hits);
  EXPECT_LE(last, times);
  for (auto& [k, n] : per_period) {
    if (k < times) {
      EXPECT_GT(n, max) << "armed period " << k << " ended before it went over";
    }
  }
  std::printf("%llu hits of %llu calls, %llu suppressions\n", (unsigned long long)hits,
              (unsigned long long)same_address, (unsigned long long)times);
}
