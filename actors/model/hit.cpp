#include "actors/model/hit.hpp"

namespace vmitap {

const capture_value* hit_site::capture(std::string_view name) const {
  if (!bp || bp->captures().empty())
    return nullptr;
  auto& specs = *bp->captures().specs;
  for (size_t i = 0; i < specs.size() && i < captures.size(); ++i)
    if (specs[i].name == name)
      return &captures[i];
  return nullptr;
}

std::optional<uint64_t> hit_site::value(std::string_view name) const {
  auto* c = capture(name);
  if (!c || c->fault != drv::translation_fault::none)
    return std::nullopt;
  return c->number;  // none for strings and bytes
}

}  // namespace vmitap
