#include "actors/model/counters.hpp"

namespace vmitap {

const char* to_string(malformed_cause c) {
  switch (c) {
    case malformed_cause::bad_version:
      return "bad_version";
    case malformed_cause::unknown_reason:
      return "unknown_reason";
    case malformed_cause::vcpu_out_of_range:
      return "vcpu_out_of_range";
  }
  return "unknown";
}

const std::vector<double>& handling_buckets() {
  // Dense where a poller's answer lands (1-100 µs), then up to 10 ms.
  static const std::vector<double> b{1e-6, 2e-6,   3e-6, 5e-6,   7.5e-6, 1e-5, 1.5e-5,
                                     2e-5, 3e-5,   5e-5, 7.5e-5, 1e-4,   2e-4, 3e-4,
                                     5e-4, 7.5e-4, 1e-3, 2.5e-3, 5e-3,   1e-2};
  return b;
}

const std::vector<double>& batch_buckets() {
  static const std::vector<double> b{1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096, 16384};
  return b;
}

const std::vector<double>& call_buckets() {
  static const std::vector<double> b{1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 0.1, 1};
  return b;
}

const std::vector<double>& handler_buckets() {
  static const std::vector<double> b{1e-5,   2.5e-5, 5e-5, 1e-4,   2.5e-4, 5e-4, 1e-3,
                                     2.5e-3, 5e-3,   1e-2, 2.5e-2, 5e-2,   0.1,  0.25,
                                     0.5,    1,      2.5,  5,      10};
  return b;
}

vcpu_stats domain_counters::totals() const {
  vcpu_stats t;
  for (uint32_t i = 0; i < vcpu_count; ++i) {
    auto& v = vcpus[i];
    t.events += v.mem_access.get() + v.singlestep.get() + v.other.get();
    t.hits += v.hits.get();
    t.filtered += v.filtered.get();
    t.neighbours += v.neighbours.get();
    t.data_accesses += v.data_accesses.get();
    t.stale += v.stale.get();
    t.spurious += v.spurious.get();
    t.singlesteps += v.singlestep.get();
    for (auto& m : v.malformed)
      t.malformed += m.get();
  }
  t.events += orphans.get();
  t.malformed += orphans.get();
  t.respond_failures = respond_failures.get();
  t.table_writes = table_writes.get();
  t.table_bits = table_bits.get();
  return t;
}

}  // namespace vmitap
