#pragma once

// What a domain session reports, at a status or at its end: plain values (no live
// breakpoint, no atomics), so a report can be copied, kept, folded and one day serialised.

#include "actors/model/breakpoint.hpp"
#include "actors/model/counters.hpp"

#include <string>
#include <utility>
#include <vector>

namespace vmitap {

/// One breakpoint's hits in a report.
struct breakpoint_count {
  std::string name;
  drv::view_id view = 0;
  uint64_t pa = 0;
  uint64_t hits = 0;
  uint64_t filtered = 0;      ///< hits in processes its filter excludes (not recorded)
  uint64_t suppressions = 0;  ///< times its rate limit disarmed it (it missed those hits)
  bool live = false;          ///< armed part of the session only (by a reload, or removed by one)
  bool pending = false;       ///< virtual, its page not mapped at the report (pa: where it was)
  bool operator==(const breakpoint_count&) const = default;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, breakpoint_count& x) {
  return f(x.name, x.view, x.pa, x.hits, x.filtered, x.suppressions, x.live, x.pending);
}

/// `bp`'s count now.
breakpoint_count count_of(const breakpoint& bp);

/// What a domain's teardown or status reports.
struct domain_report {
  drv::domain_id id = 0;
  std::string name;
  bool died = false;
  vcpu_stats totals;
  std::vector<breakpoint_count> breakpoints;  ///< armed at the report, with their hits
  /// Removed by a reload during the session (armed part of the time), with their hits; one
  /// per name, view and address (a breakpoint removed again adds its hits).
  std::vector<breakpoint_count> removed;
  uint64_t access_calls = 0;    ///< batched access-change calls made
  uint64_t access_changes = 0;  ///< pages changed by them
  uint64_t access_failures = 0;
  std::string error;      ///< first teardown error, if any
  uint32_t sessions = 1;  ///< sessions summed up here (see fold)
  bool attached = false;  ///< its attach completed: its plan's breakpoints were armed
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, domain_report& x) {
  return f(x.id, x.name, x.died, x.totals, x.breakpoints, x.removed, x.access_calls,
           x.access_changes, x.access_failures, x.error, x.sessions, x.attached);
}

/// Adds `later`'s counts to `into` (the same domain name, both ended): totals, access calls,
/// each breakpoint's hits by name, view and address (fold_breakpoints), the first error, the
/// newest id. Bounded by breakpoints, however many sessions are folded.
void fold(domain_report& into, const domain_report& later);

/// Adds `counts` to `into` by name, view and address: one entry each, a repeated one with
/// both hit counts. What stays bounded by breakpoints, however often they come and go.
void fold_breakpoints(std::vector<breakpoint_count>& into,
                      const std::vector<breakpoint_count>& counts);

/// The outcome of a batch of breakpoint additions or removals: what failed, and why.
struct batch_result {
  size_t ok = 0;
  std::vector<std::pair<std::string, caf::error>> failed;  ///< breakpoint name, why
  bool domain_gone = false;  ///< a failure was the domain's death, not a fault of the call
  std::vector<breakpoint_count> removed;  ///< a removal's breakpoints, with the hits they had
};

}  // namespace vmitap
