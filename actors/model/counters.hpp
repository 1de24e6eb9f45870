#pragma once

// What vmitap counts, as plain memory: one writer at a time (ownership passes by message or
// by the hypervisor's one-request-per-VCPU rule), any number of readers. An increment is a
// relaxed load and store, no lock prefix and no CAS; the Prometheus exporter reads these
// when it is scraped. No Prometheus type appears here.

#include "drivers/guest/page_walker.hpp"
#include "drivers/session_counts.hpp"
#include "drivers/vm_event.hpp"

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace vmitap {

class counter {
public:
  void add(uint64_t n = 1) {
    value_.store(value_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  uint64_t get() const { return value_.load(std::memory_order_relaxed); }

private:
  std::atomic<uint64_t> value_{0};
};

/// A histogram with fixed bucket bounds (seconds or units), written by one owner at a time.
class histogram {
public:
  explicit histogram(const std::vector<double>& bounds) :
    bounds_(bounds), counts_(bounds.size() + 1) {}
  void observe(double value, uint64_t times = 1) {
    size_t i = 0;
    while (i < bounds_.size() && value > bounds_[i])
      ++i;
    counts_[i].add(times);
    sum_.store(sum_.load(std::memory_order_relaxed) + value * double(times),
               std::memory_order_relaxed);
  }
  const std::vector<double>& bounds() const { return bounds_; }
  /// Count in bucket i (the last one: above every bound).
  uint64_t bucket(size_t i) const { return counts_[i].get(); }
  double sum() const { return sum_.load(std::memory_order_relaxed); }

private:
  const std::vector<double>& bounds_;
  std::vector<counter> counts_;
  std::atomic<double> sum_{0};
};

/// Why a request was malformed (the `cause` label).
enum class malformed_cause : uint8_t { bad_version, unknown_reason, vcpu_out_of_range };
inline constexpr size_t malformed_causes = 3;
const char* to_string(malformed_cause c);

/// One VCPU's counts. Written by whoever handles that VCPU's current request.
struct vcpu_counters {
  counter mem_access;  ///< requests by reason
  counter singlestep;
  counter other;
  counter hits;           ///< breakpoints hit (one trap can hit several)
  counter filtered;       ///< hits in processes their breakpoint does not report
  counter neighbours;     ///< traps on a monitored page, not at a breakpoint
  counter data_accesses;  ///< reads or writes that trapped on a monitored page
  counter stale;          ///< traps on a page whose breakpoints were removed in flight
  counter spurious;       ///< traps in no view or page vmitap manages
  std::array<counter, malformed_causes> malformed;
  std::atomic<bool> stepping{false};  ///< between a classic trap and its singlestep
};

/// drv::translation_fault values (the `cause` label of capture failures).
inline constexpr size_t capture_fault_kinds = size_t(drv::translation_fault::read_failed) + 1;

/// Bucket bounds, fixed for the process (Prometheus needs the same bounds every scrape).
const std::vector<double>& handling_buckets();  ///< seconds, dense from 1 µs to 10 ms
const std::vector<double>& batch_buckets();     ///< pages per access-change call
const std::vector<double>& call_buckets();      ///< seconds per access-change call
const std::vector<double>& handler_buckets();   ///< seconds, 10 µs to 10 s

/// A session's counts summed over its VCPUs (the one struct the sim's verification reads too).
using vcpu_stats = drv::session_counts;

/// Everything counted about one monitored domain session.
struct domain_counters {
  explicit domain_counters(uint32_t vcpus) :
    vcpus(std::make_unique<vcpu_counters[]>(vcpus)), vcpu_count(vcpus) {}

  std::unique_ptr<vcpu_counters[]> vcpus;
  uint32_t vcpu_count;
  counter orphans;           ///< requests naming a VCPU the domain does not have
  counter respond_failures;  ///< responses the hypervisor refused: a VCPU may stay paused
  /// Captures that could not be read, by drv::translation_fault (index 0, none, unused).
  std::array<counter, capture_fault_kinds> capture_failures;
  counter process_failures;  ///< hits whose process could not be read (recorded without it)
  counter table_writes;      ///< guest writes to watched page tables (each walked again after)
  counter table_bits;        ///< accessed/dirty bits the hardware set in watched page tables
  /// Request taken from the ring → response written (the poller's part).
  histogram handling{handling_buckets()};

  // The handler relay's: one actor writes them.
  histogram handler_seconds{handler_buckets()};  ///< hit sent → handler's decision back
  counter handler_timeouts;                      ///< VCPUs resumed at their breakpoint's deadline
  counter handler_errors;      ///< VCPUs resumed because the handler failed or is not there
  counter handler_queue_full;  ///< hits not sent: the handler had handler_queue_bound calls
  counter handler_expired;     ///< calls a function handler skipped: their deadline had passed

  // The registry's: virtual breakpoints (a symbol or a virtual address) by where they are.
  std::atomic<uint32_t> pending{0};         ///< their page is not mapped: armed when it is
  std::atomic<uint32_t> watched_tables{0};  ///< page-table pages write-protected for them

  // The controller's: one actor writes them.
  counter access_calls;
  counter access_ok;      ///< pages changed as asked
  counter access_failed;  ///< pages a failed call left unchanged
  histogram batch_size{batch_buckets()};
  histogram access_seconds{call_buckets()};

  /// The session's counts summed over its VCPUs (requests for VCPUs it lacks included).
  vcpu_stats totals() const;
};

}  // namespace vmitap
