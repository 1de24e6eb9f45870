#include "actors/control/symbol_resolver.hpp"

#include "drivers/error.hpp"

namespace vmitap {

resolution resolve_symbols(const drv::kernel_profile* profile, const drv::kernel_map* kernel,
                           const std::vector<breakpoint_def>& defs) {
  using kind = breakpoint_target::kind;
  resolution out;
  for (auto def : defs) {
    auto& t = def.target;
    if (t.by == kind::physical) {
      out.resolved.push_back(std::move(def));
      continue;
    }
    if (!profile || !kernel) {
      out.failed.emplace_back(
        def.name(), make_error(ec::kernel_not_found, t.describe() + ": the domain has no profile"));
      continue;
    }
    if (t.by == kind::symbol) {
      auto value = profile->symbol(t.symbol);
      if (!value) {
        out.failed.emplace_back(
          def.name(),
          make_error(ec::invalid_argument, "no symbol " + t.symbol + " in " + profile->path));
        continue;
      }
      t.va = kernel->va_of(*value) + t.offset;
    }
    t.pa = 0;  // the registry places it
    out.resolved.push_back(std::move(def));
  }
  return out;
}

virtual_place place_virtual(drv::page_walker& walker, uint64_t cr3, uint64_t va) {
  auto tr = walker.translate(cr3, va);
  virtual_place at;
  at.table = drv::gfn_of(tr.entry_pa);
  if (tr) {
    at.pa = tr.pa;
    at.watched = tr.level == 1;
    return at;
  }
  if (tr.fault == drv::translation_fault::not_present) {
    at.watched = true;
    return at;
  }
  char where[24];
  std::snprintf(where, sizeof where, "0x%llx", static_cast<unsigned long long>(va));
  at.error = make_error(ec::gfn_out_of_range,
                        std::string("walking ") + where + ": " + drv::to_string(tr.fault));
  return at;
}

}  // namespace vmitap
