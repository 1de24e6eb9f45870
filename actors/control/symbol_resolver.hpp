#pragma once

// A breakpoint's target, resolved to the guest-physical address the registry arms: a
// physical one as it is; a symbol through the domain's profile to a kernel virtual address;
// a virtual address through the kernel's page tables (the kernel_map's cr3: a kernel-mode
// VCPU's, live at the time; the kernel half is the same in every address space).

#include "actors/model/breakpoint.hpp"
#include "drivers/guest/kernel.hpp"

#include <caf/error.hpp>

#include <string>
#include <utility>
#include <vector>

namespace vmitap {

struct resolution {
  std::vector<breakpoint_def> resolved;  ///< target.pa (and for a symbol target.va) filled
  std::vector<std::pair<std::string, caf::error>> failed;  ///< by breakpoint name
};

/// Resolves `defs` with the domain's profile and kernel (both null if it has no profile: then
/// only physical targets resolve). The domain must be paused.
resolution resolve_targets(drv::domain_session& session, const drv::kernel_profile* profile,
                           const drv::kernel_map* kernel, const std::vector<breakpoint_def>& defs);

}  // namespace vmitap
