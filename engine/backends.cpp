#include "engine/backends.hpp"

#include "engine/backend_sim.hpp"
#include "engine/backend_xen.hpp"

namespace vmitap {

const std::vector<backend>& backends() {
  static const std::vector<backend> rows = {sim_backend(), xen_backend()};
  return rows;
}

const backend* find_backend(std::string_view name) {
  for (auto& b : backends())
    if (b.name == name)
      return &b;
  return nullptr;
}

std::string backend_names() {
  std::string out;
  for (auto& b : backends())
    out += (out.empty() ? "\"" : ", \"") + b.name + "\"";
  return out;
}

}  // namespace vmitap
