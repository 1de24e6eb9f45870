#include "engine/reload_plan.hpp"

#include <algorithm>
#include <set>

namespace vmitap {

reload_plan diff(const engine_config& before, const engine_config& after,
                 const std::vector<drv::domain_info>& monitored) {
  reload_plan out;
  std::set<std::string> changed_sinks;
  for (auto& s : before.sinks) {
    auto n = std::find_if(after.sinks.begin(), after.sinks.end(),
                          [&](auto& x) { return x.name == s.name; });
    if (n == after.sinks.end() || !(*n == s)) {
      out.close.push_back(s.name);
      changed_sinks.insert(s.name);
    }
  }
  for (auto& s : after.sinks) {
    auto o = std::find_if(before.sinks.begin(), before.sinks.end(),
                          [&](auto& x) { return x.name == s.name; });
    if (o == before.sinks.end() || !(*o == s))
      out.open.push_back(s);
  }
  for (auto& info : monitored) {
    reload_plan::domain_action a;
    a.id = info.id;
    auto* old_entry = before.entry_for(info);
    auto* new_entry = after.entry_for(info);
    auto uses_changed_sink = [&](const engine_config::domain_entry& e) {
      return std::any_of(e.sinks.begin(), e.sinks.end(),
                         [&](auto& s) { return changed_sinks.count(s) > 0; });
    };
    if (!new_entry) {
      a.kind = reload_plan::domain_action::detach;
      a.reason = after.entries_for(info).empty() ? "no longer selected"
                                                 : "selected by more than one [[domain]] entry";
    } else if (!old_entry || old_entry->sinks != new_entry->sinks ||
               uses_changed_sink(*new_entry)) {
      a.kind = reload_plan::domain_action::reattach;
      a.reason = "its sinks changed";
    } else if (!old_entry->plan->same_shape(*new_entry->plan)) {
      a.kind = reload_plan::domain_action::reattach;
      a.reason = "its views, step mode, VCPU views or kernel profile changed";
    } else if (old_entry->plan->breakpoints != new_entry->plan->breakpoints) {
      a.kind = reload_plan::domain_action::update;
      a.plan = new_entry->plan;
      a.reason = "its breakpoints changed";
    } else {
      a.plan = new_entry->plan;  // kept: the engine may still send it (a failed update)
    }
    out.domains.push_back(std::move(a));
  }
  return out;
}

}  // namespace vmitap
