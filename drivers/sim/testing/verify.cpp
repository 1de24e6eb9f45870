#include "drivers/sim/testing/verify.hpp"

#include <cstdio>
#include <map>

namespace vmitap::sim {

namespace {

/// Appends one formatted row, however long its names make it.
template <class... Ts>
void append(std::string& out, const char* fmt, Ts... xs) {
  int n = std::snprintf(nullptr, 0, fmt, xs...);
  if (n <= 0)
    return;
  auto at = out.size();
  out.resize(at + size_t(n) + 1);
  std::snprintf(out.data() + at, size_t(n) + 1, fmt, xs...);
  out.resize(at + size_t(n));
}

}  // namespace

verification verify(hypervisor& hv, const std::vector<observed_session>& sessions,
                    size_t expected) {
  verification v;
  bool ok = sessions.size() >= expected;
  auto& out = v.table;
  if (!ok)
    append(out, "\n%zu of %zu domains reported\n", sessions.size(), expected);
  append(out, "\n%-12s %-20s %5s %10s %10s %9s %12s  %s\n", "domain", "breakpoint", "view", "pa",
         "hits", "filtered", "ground-truth", "");
  std::map<drv::domain_id, size_t> per_domain;
  for (auto& s : sessions)
    per_domain[s.id] += s.sessions;
  for (auto& s : sessions) {
    auto dom = hv.find(s.id);
    if (!s.error.empty()) {
      append(out, "%-12s error: %s\n", s.name.c_str(), s.error.c_str());
      ok = false;
    }
    for (auto& bp : s.breakpoints) {
      // Reached, not only retired: a VCPU stopped mid-step at detach has been hit already.
      uint64_t truth = dom ? dom->reached(bp.pa, bp.view) : 0;
      // A hit its process filter excluded was reached all the same.
      bool exact = dom && bp.hits + bp.filtered == truth;
      // Armed for part of the domain's monitored time only (a reload added it or attached the
      // domain again): ground truth counts all of it, so there is nothing exact to compare.
      bool partial = !bp.whole_session || per_domain[s.id] > 1;
      ok &= exact || s.died || partial;
      append(out, "%-12s %-20s %5u %#10llx %10llu %9llu %12llu  %s\n", s.name.c_str(),
             bp.name.c_str(), unsigned(bp.view), (unsigned long long)bp.pa,
             (unsigned long long)bp.hits, (unsigned long long)bp.filtered,
             (unsigned long long)truth,
             bp.removed ? "removed by a reload"
             : exact    ? "exact"
             : partial  ? "armed part of the time (reload)"
             : s.died   ? "domain died"
                        : "MISMATCH");
    }
    for (auto& name : s.never_armed) {
      append(out, "%-12s %-20s %5s %10s %10s %12s  %s\n", s.name.c_str(), name.c_str(), "-", "-",
             "-", "-", "NEVER ARMED (configured)");
      ok = false;
    }
  }
  append(out, "\n%-12s %10s %10s %10s %10s %8s %8s %7s %8s %6s %6s\n", "domain", "raised",
         "answered", "events", "hits", "nbrs", "stale", "paused", "changed", "views", "calls");
  for (auto& s : sessions) {
    auto dom = hv.find(s.id);
    if (!dom) {
      append(out, "%-12s (gone)\n", s.name.c_str());
      continue;
    }
    auto inv = dom->check();
    auto& c = s.counts;
    ok &= inv.holds() && inv.answered_by_detach == 0 && c.respond_failures == 0;
    append(out, "%-12s %10llu %10llu %10llu %10llu %8llu %8llu %7llu %8llu %6llu %6llu\n",
           s.name.c_str(), (unsigned long long)inv.requests_raised,
           (unsigned long long)inv.requests_answered, (unsigned long long)c.events,
           (unsigned long long)c.hits, (unsigned long long)c.neighbours,
           (unsigned long long)c.stale, (unsigned long long)inv.paused_vcpus,
           (unsigned long long)inv.pages_changed, (unsigned long long)inv.views_left,
           (unsigned long long)s.access_calls);
  }
  // A monitor that follows the module's page tables saw every trap on them and disarmed the
  // module's pages before each unload completed.
  bool header = false;
  for (auto& s : sessions) {
    auto dom = hv.find(s.id);
    if (!dom || !dom->code().has_module())
      continue;
    if (!header)
      append(out, "\n%-12s %6s %8s %13s %13s %13s %13s %9s\n", "domain", "loads", "unloads",
             "table-writes", "(truth)", "accessed-bits", "(truth)", "left-armed");
    header = true;
    auto t = dom->module_truth();
    auto& c = s.counts;
    bool whole = per_domain[s.id] == 1 && !s.died;
    bool exact = c.table_writes == t.table_write_traps && c.table_bits == t.accessed_bit_traps;
    ok &= (exact || !whole) && t.pages_monitored_while_absent == 0 && t.executed_while_absent == 0;
    append(out, "%-12s %6llu %8llu %13llu %13llu %13llu %13llu %9llu  %s\n", s.name.c_str(),
           (unsigned long long)t.loads, (unsigned long long)t.unloads,
           (unsigned long long)c.table_writes, (unsigned long long)t.table_write_traps,
           (unsigned long long)c.table_bits, (unsigned long long)t.accessed_bit_traps,
           (unsigned long long)t.pages_monitored_while_absent,
           !exact && whole                      ? "MISMATCH"
           : t.pages_monitored_while_absent > 0 ? "ARMED WHILE ABSENT"
           : t.executed_while_absent > 0        ? "RAN WHILE ABSENT"
                                                : "exact");
  }
  append(out, "\n%s\n",
         ok ? "verified: every breakpoint's hits equal ground truth; requests answered = raised, "
              "VCPUs left paused = 0, pages changed = 0, views left = 0"
            : "NOT VERIFIED: see the rows above");
  v.ok = ok;
  return v;
}

}  // namespace vmitap::sim
