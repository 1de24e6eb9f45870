// The fault campaign's two halves as tests. Each trial's seed is in every failure message.

#include "tests/campaign/campaign.hpp"

#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
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
  const char* secs = std::getenv("VMITAP_CAMPAIGN_SECONDS");
  return {number("VMITAP_CAMPAIGN_SEED", default_seed),
          number("VMITAP_CAMPAIGN_TRIALS", default_trials), secs ? std::strtod(secs, nullptr) : 0};
}

uint64_t rss_kib() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmRSS:", 0) == 0)
      return std::strtoull(line.c_str() + 6, nullptr, 10);
  return 0;
}

double slope(const std::vector<double>& ys) {
  double n = double(ys.size()), sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (size_t i = 0; i < ys.size(); ++i) {
    sx += double(i);
    sy += ys[i];
    sxx += double(i) * double(i);
    sxy += double(i) * ys[i];
  }
  double den = n * sxx - sx * sx;
  return den == 0 ? 0 : (n * sxy - sx * sy) / den;
}

namespace {

void run_campaign(const char* what, uint64_t default_seed, uint64_t default_trials,
                  void (*trial)(uint64_t, tally&)) {
  auto p = plan::from_environment(default_seed, default_trials);
  // The engine logs every attach and detach; a failure's warnings and errors are what to read.
  if (!std::getenv("VMITAP_CAMPAIGN_VERBOSE"))
    spdlog::set_level(spdlog::level::warn);
  std::printf("%s: seeds %llu to %llu\n", what, (unsigned long long)p.first_seed,
              (unsigned long long)(p.first_seed + p.trials - 1));
  tally t;
  auto t0 = std::chrono::steady_clock::now();
  std::vector<double> rss;  // MiB after each trial
  for (uint64_t seed = p.first_seed; seed < p.first_seed + p.trials; ++seed) {
    if (p.seconds > 0 &&
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() >= p.seconds)
      break;
    SCOPED_TRACE("trial seed " + std::to_string(seed) + " (alone: VMITAP_CAMPAIGN_SEED=" +
                 std::to_string(seed) + " VMITAP_CAMPAIGN_TRIALS=1)");
    trial(seed, t);
    rss.push_back(double(rss_kib()) / 1024);
    if (::testing::Test::HasFailure()) {
      std::printf("%s: trial seed %llu failed\n", what, (unsigned long long)seed);
      break;  // the first failing trial is the one to read
    }
  }
  std::printf("%s: %s in %.0f s\n", what, t.describe().c_str(),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  // Memory held across trials: the slope over the second half (the first warms caches and
  // the allocator). A leak of a trial's worth grows it by that much per trial.
  if (rss.size() >= 20) {
    std::vector<double> late(rss.begin() + rss.size() / 2, rss.end());
    auto per_trial = slope(late);
    std::printf(
      "%s: RSS %.1f MiB after the first trial, %.1f MiB at the end; slope over the "
      "last %zu trials %+.3f MiB per trial\n",
      what, rss.front(), rss.back(), late.size(), per_trial);
    // Flat: what the second half's fit adds up to stays under 16 MiB. Judged on a soak's
    // length only: over a few dozen trials one larger topology's peak is a step, not a slope.
    if (late.size() >= 100) {
      EXPECT_LT(per_trial * double(late.size()), 16.0) << "memory grows from trial to trial";
    }
  }
}

}  // namespace

TEST(campaign, faults_race_reloads_and_stops_and_every_invariant_holds) {
  run_campaign("engine", 1000, 60, engine_trial);
}

TEST(campaign, signals_at_any_moment_and_reload_storms_end_clean_and_exact) {
  run_campaign("process", 5000, 30, process_trial);
}

}  // namespace vmitap::testing::campaign
