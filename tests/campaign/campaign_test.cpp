// The fault campaign's two halves as tests. Each trial's seed is in every failure message.

#include "tests/campaign/campaign.hpp"

#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstdlib>
#include <sstream>

namespace vmitap::testing::campaign {

std::string tally::describe() const {
  std::ostringstream out;
  out << trials << " trials, " << events << " events answered and checked, " << hits_checked
      << " hits compared with ground truth, " << faults << " faults, " << reloads << " reloads, "
      << signals << " signals";
  return out.str();
}

plan plan::from_environment(uint64_t default_seed, uint64_t default_trials) {
  auto number = [](const char* name, uint64_t fallback) {
    const char* v = std::getenv(name);
    return v && *v ? std::strtoull(v, nullptr, 0) : fallback;
  };
  return {number("VMITAP_CAMPAIGN_SEED", default_seed),
          number("VMITAP_CAMPAIGN_TRIALS", default_trials)};
}

namespace {

void run_campaign(const char* what, uint64_t default_seed, uint64_t default_trials,
                  void (*trial)(uint64_t, tally&)) {
  auto p = plan::from_environment(default_seed, default_trials);
  // The engine logs every attach and detach; a failure's warnings and errors are what to read.
  if (!std::getenv("VMITAP_CAMPAIGN_VERBOSE"))
    spdlog::set_level(spdlog::level::warn);
  std::printf("%s: seeds %llu to %llu\n", what, (unsigned long long) p.first_seed,
              (unsigned long long) (p.first_seed + p.trials - 1));
  tally t;
  for (uint64_t seed = p.first_seed; seed < p.first_seed + p.trials; ++seed) {
    SCOPED_TRACE("trial seed " + std::to_string(seed) + " (alone: VMITAP_CAMPAIGN_SEED="
                 + std::to_string(seed) + " VMITAP_CAMPAIGN_TRIALS=1)");
    trial(seed, t);
    if (::testing::Test::HasFailure()) {
      std::printf("%s: trial seed %llu failed\n", what, (unsigned long long) seed);
      break;  // the first failing trial is the one to read
    }
  }
  std::printf("%s: %s\n", what, t.describe().c_str());
}

}  // namespace

TEST(campaign, faults_race_reloads_and_stops_and_every_invariant_holds) {
  run_campaign("engine", 1000, 60, engine_trial);
}

TEST(campaign, signals_at_any_moment_and_reload_storms_end_clean_and_exact) {
  run_campaign("process", 5000, 30, process_trial);
}

}  // namespace vmitap::testing::campaign
