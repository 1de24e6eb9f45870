#pragma once

// The fault campaign: seeded trials that throw at vmitap what an operator's machine does —
// signals at any moment, reload storms of good and bad files, domains dying and restarting
// under their names, failing access changes, malformed and late requests — and check after
// each that the promise held: every request answered, no VCPU paused, no page changed, no
// view left, hits equal ground truth, a clean exit.
//
// `make test` runs a fixed number of trials; `make soak` the same code with more, from a new
// seed. A failure names its trial's seed; VMITAP_CAMPAIGN_SEED=S VMITAP_CAMPAIGN_TRIALS=1
// runs that trial alone.

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace vmitap::testing::campaign {

/// What the trials have checked so far (printed at the end of each test).
struct tally {
  uint64_t trials = 0;
  uint64_t events = 0;        ///< requests the engine handled, each one checked answered
  uint64_t hits_checked = 0;  ///< hits compared with ground truth
  uint64_t faults = 0;        ///< sim faults injected
  uint64_t reloads = 0;       ///< applied or rejected
  uint64_t signals = 0;
  std::string describe() const;
};

/// A trial's random choices, all from its seed.
class dice {
public:
  explicit dice(uint64_t seed) : rng_(seed) {}
  uint64_t below(uint64_t n) { return n ? rng_() % n : 0; }
  bool one_in(uint64_t n) { return below(n) == 0; }

private:
  std::mt19937_64 rng_;
};

/// The campaign's size and first seed, from VMITAP_CAMPAIGN_TRIALS and VMITAP_CAMPAIGN_SEED
/// (defaults: `trials`, and a fixed seed per test so that CI runs the same trials), and a
/// time budget, VMITAP_CAMPAIGN_SECONDS (0: none): no trial starts after it.
struct plan {
  uint64_t first_seed = 0;
  uint64_t trials = 0;
  double seconds = 0;
  static plan from_environment(uint64_t default_seed, uint64_t default_trials);
};

/// Resident memory of this process, in KiB (VmRSS).
uint64_t rss_kib();

/// The least-squares slope of `ys` over their index: growth per trial.
double slope(const std::vector<double>& ys);

/// One trial on the engine in this process (faults racing reloads and stops).
void engine_trial(uint64_t seed, tally& t);
/// One trial of the vmitap binary (signals at any moment, reload storms through SIGHUP).
void process_trial(uint64_t seed, tally& t);

}  // namespace vmitap::testing::campaign
