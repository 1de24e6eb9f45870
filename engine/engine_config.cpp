#include "engine/engine_config.hpp"

#include <fnmatch.h>

namespace vmitap {

bool domain_selector::matches(const drv::domain_info& d) const {
  if (id && *id != d.id)
    return false;
  if (!name.empty() && name != d.name)
    return false;
  if (!pattern.empty() && fnmatch(pattern.c_str(), d.name.c_str(), 0) != 0)
    return false;
  return id || !name.empty() || !pattern.empty();
}

std::string domain_selector::describe() const {
  std::string out;
  auto add = [&](std::string part) { out += (out.empty() ? "" : " ") + part; };
  if (!name.empty())
    add("name=" + name);
  if (id)
    add("id=" + std::to_string(*id));
  if (!pattern.empty())
    add("pattern=" + pattern);
  return out.empty() ? "(nothing)" : out;
}

const engine_config::domain_entry* engine_config::entry_for(const drv::domain_info& info) const {
  auto all = entries_for(info);
  return all.size() == 1 ? all[0] : nullptr;
}

std::vector<const engine_config::domain_entry*> engine_config::entries_for(
  const drv::domain_info& info) const {
  std::vector<const domain_entry*> out;
  for (auto& e : domains)
    if (e.select.matches(info))
      out.push_back(&e);
  return out;
}

engine_config engine_config::with_topology_of(const engine_config& next) const {
  auto out = *this;
  out.sinks = next.sinks;
  out.domains = next.domains;
  return out;
}

bool engine_config::same_settings(const engine_config& other) const {
  return worker_threads == other.worker_threads && pollers == other.pollers &&
         poller_spin == other.poller_spin && detached_children == other.detached_children &&
         stop_deadline == other.stop_deadline && metrics_listen == other.metrics_listen &&
         ended_reports_kept == other.ended_reports_kept;
}

}  // namespace vmitap
