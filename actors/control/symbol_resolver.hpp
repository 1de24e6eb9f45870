#pragma once

// A breakpoint's target, resolved toward the guest-physical address the registry arms: a
// physical one is one; a symbol becomes a kernel virtual address through the domain's profile
// and the kernel found at attach; a virtual address is placed by a walk of the kernel's page
// tables (a kernel-mode VCPU's cr3, live at the time; the kernel half is the same in every
// address space), which the registry repeats whenever a table on its way is written.

#include "actors/model/breakpoint.hpp"
#include "drivers/guest/kernel.hpp"

#include <caf/error.hpp>

#include <string>
#include <utility>
#include <vector>

namespace vmitap {

struct resolution {
  std::vector<breakpoint_def> resolved;                    ///< a symbol's target.va filled
  std::vector<std::pair<std::string, caf::error>> failed;  ///< by breakpoint name
};

/// Resolves the symbols of `defs` with the domain's profile and kernel (both null if it has
/// no profile: then only physical targets resolve).
resolution resolve_symbols(const drv::kernel_profile* profile, const drv::kernel_map* kernel,
                           const std::vector<breakpoint_def>& defs);

/// Where a virtual address is now, and which page-table entry says so.
struct virtual_place {
  uint64_t pa = 0;       ///< 0: not mapped (pending)
  drv::gfn_t table = 0;  ///< the page holding the deciding entry (the leaf, or the clear one)
  bool watched = false;  ///< that entry can change: a 4 KiB leaf or a clear entry (a large
                         ///< page maps the kernel image, which is never paged)
  caf::error error;      ///< the walk failed otherwise (not RAM, a failed read, ...)
};

/// Walks `va` through the tables at `cr3`.
virtual_place place_virtual(drv::page_walker& walker, uint64_t cr3, uint64_t va);

}  // namespace vmitap
