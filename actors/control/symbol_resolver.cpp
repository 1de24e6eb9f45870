#include "actors/control/symbol_resolver.hpp"

#include "drivers/error.hpp"

namespace vmitap {

resolution resolve_targets(drv::domain_session& session, const drv::kernel_profile* profile,
                           const drv::kernel_map* kernel, const std::vector<breakpoint_def>& defs) {
  using kind = breakpoint_target::kind;
  resolution out;
  drv::page_walker walker{session};  // one pause: its cache of table entries stays valid
  for (auto def : defs) {
    auto& t = def.target;
    auto fail = [&](caf::error err) { out.failed.emplace_back(def.name(), std::move(err)); };
    if (t.by == kind::physical) {
      out.resolved.push_back(std::move(def));
      continue;
    }
    if (!profile || !kernel) {
      fail(make_error(ec::kernel_not_found, t.describe() + ": the domain has no profile"));
      continue;
    }
    if (t.by == kind::symbol) {
      auto value = profile->symbol(t.symbol);
      if (!value) {
        fail(make_error(ec::invalid_argument, "no symbol " + t.symbol + " in " + profile->path));
        continue;
      }
      t.va = kernel->va_of(*value) + t.offset;
    }
    auto tr = walker.translate(kernel->cr3, t.va);
    if (!tr) {
      char at[24];
      std::snprintf(at, sizeof at, "0x%llx", static_cast<unsigned long long>(t.va));
      fail(make_error(
        tr.fault == drv::translation_fault::not_present ? ec::not_mapped : ec::gfn_out_of_range,
        t.describe() + " at " + at + ": " + drv::to_string(tr.fault)));
      continue;
    }
    t.pa = tr.pa;
    out.resolved.push_back(std::move(def));
  }
  return out;
}

}  // namespace vmitap
