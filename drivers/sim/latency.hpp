#pragma once

// A latency histogram for the simulated hardware's own clocks: log-linear buckets (16 per
// octave, about 6 % wide) from 1 ns to 18 minutes. Not thread-safe: each owner records under
// its own lock and readers merge copies.

#include <array>
#include <bit>
#include <cstdint>

namespace vmitap::sim {

class latency_histogram {
public:
  static constexpr unsigned sub_bits = 4;
  static constexpr unsigned buckets = 41u << sub_bits;

  void record(uint64_t ns) {
    ++counts_[index(ns)];
    ++total_;
  }
  void merge(const latency_histogram& other) {
    for (unsigned i = 0; i < buckets; ++i)
      counts_[i] += other.counts_[i];
    total_ += other.total_;
  }
  /// What was recorded since `earlier`, a copy of this histogram taken before.
  void subtract(const latency_histogram& earlier) {
    for (unsigned i = 0; i < buckets; ++i)
      counts_[i] -= earlier.counts_[i];
    total_ -= earlier.total_;
  }
  uint64_t count() const { return total_; }
  /// The value below which a fraction `q` of the recordings lie (a bucket's midpoint), in ns.
  uint64_t quantile(double q) const {
    if (total_ == 0)
      return 0;
    auto rank = uint64_t(q * double(total_ - 1)) + 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < buckets; ++i)
      if ((seen += counts_[i]) >= rank)
        return (lower(i) + upper(i)) / 2;
    return upper(buckets - 1);
  }

private:
  static unsigned index(uint64_t ns) {
    if (ns < (1u << sub_bits))
      return unsigned(ns);
    unsigned e = 63u - unsigned(std::countl_zero(ns));
    if (e > 39)
      return buckets - 1;
    auto sub = unsigned(ns >> (e - sub_bits)) & ((1u << sub_bits) - 1);
    return ((e - sub_bits + 1) << sub_bits) + sub;
  }
  static uint64_t lower(unsigned i) {
    if (i < (1u << sub_bits))
      return i;
    unsigned e = (i >> sub_bits) + sub_bits - 1;
    return uint64_t((1u << sub_bits) + (i & ((1u << sub_bits) - 1))) << (e - sub_bits);
  }
  static uint64_t upper(unsigned i) {
    return i < (1u << sub_bits) ? i : lower(i) + (uint64_t{1} << ((i >> sub_bits) - 1)) - 1;
  }

  std::array<uint64_t, buckets> counts_{};
  uint64_t total_ = 0;
};

}  // namespace vmitap::sim
