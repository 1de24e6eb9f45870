#pragma once

#include <cstdint>

namespace vmitap::sim {

/// splitmix64: small, fast, and the same sequence on every platform.
class rng {
public:
  explicit rng(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  /// Uniform in [0, bound).
  uint64_t below(uint64_t bound) { return bound == 0 ? 0 : next() % bound; }
  /// True with probability `p`.
  bool chance(double p) { return double(next() >> 11) * 0x1.0p-53 < p; }

private:
  uint64_t state_;
};

}  // namespace vmitap::sim
