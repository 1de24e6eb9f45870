#include "actors/model/report.hpp"

#include <algorithm>

namespace vmitap {

breakpoint_count count_of(const breakpoint& bp) {
  auto* limiter = bp.limiter();
  return {bp.name,
          bp.view,
          bp.pa(),
          bp.hits.load(std::memory_order_relaxed),
          bp.filtered.load(std::memory_order_relaxed),
          limiter ? limiter->suppressions() : 0,
          bp.live,
          bp.pending()};
}

void fold_breakpoints(std::vector<breakpoint_count>& into,
                      const std::vector<breakpoint_count>& counts) {
  for (auto& c : counts) {
    auto same = std::find_if(into.begin(), into.end(), [&](auto& x) {
      return x.name == c.name && x.view == c.view && x.pa == c.pa;
    });
    if (same == into.end()) {
      into.push_back(c);
    } else {
      // Armed part of the time: counted in more than one session or piece of one.
      same->hits += c.hits;
      same->filtered += c.filtered;
      same->suppressions += c.suppressions;
      same->live = true;
    }
  }
}

void fold(domain_report& into, const domain_report& later) {
  fold_breakpoints(into.breakpoints, later.breakpoints);
  fold_breakpoints(into.removed, later.removed);
  into.id = later.id;
  into.died = into.died || later.died;
  into.attached = into.attached || later.attached;
  into.totals += later.totals;
  into.access_calls += later.access_calls;
  into.access_changes += later.access_changes;
  into.access_failures += later.access_failures;
  if (into.error.empty())
    into.error = later.error;
  into.sessions += later.sessions;
}

}  // namespace vmitap
