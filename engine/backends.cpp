#include "engine/backends.hpp"

#include "engine/backend_sim.hpp"
#include "engine/backend_xen.hpp"

namespace vmitap {

namespace {

const std::vector<backend>& table() {
  static const std::vector<backend> rows = {sim_backend(), xen_backend()};
  return rows;
}

}  // namespace

const backend* find_backend(std::string_view name) {
  for (auto& b : table())
    if (b.name == name)
      return &b;
  return nullptr;
}

std::string backend_names() {
  std::string out;
  for (auto& b : table())
    out += (out.empty() ? "\"" : ", \"") + b.name + "\"";
  return out;
}

}  // namespace vmitap
