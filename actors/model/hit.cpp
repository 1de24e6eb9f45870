#include "actors/model/hit.hpp"

#include <charconv>

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
  // A value capture reads "0x" and hex digits; anything else is a string or bytes.
  if (!c || c->fault != drv::translation_fault::none || c->text.size() < 3 ||
      c->text.compare(0, 2, "0x") != 0)
    return std::nullopt;
  uint64_t v = 0;
  auto* end = c->text.data() + c->text.size();
  auto [at, err] = std::from_chars(c->text.data() + 2, end, v, 16);
  if (err != std::errc{} || at != end)
    return std::nullopt;
  return v;
}

}  // namespace vmitap
