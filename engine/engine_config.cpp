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
  for (auto& e : domains)
    if (e.select.matches(info))
      return &e;
  return nullptr;
}

}  // namespace vmitap
