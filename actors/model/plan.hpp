#pragma once

// What to set up in one domain: its views, its step mode and its breakpoints, as the engine
// resolves them from the config.

#include "actors/model/breakpoint.hpp"
#include "drivers/guest/profile.hpp"

#include <map>

namespace vmitap {

enum class step_mode : uint8_t {
  classic,  ///< view 0 + toggle singlestep, back on the SINGLESTEP event: two events a trap
  fast,     ///< view 0 + fast singlestep with return view (Xen >= 4.17.4): one event a trap
  emulate,  ///< EMULATE: the instruction is emulated in place, no view switch: one event a trap
};
const char* to_string(step_mode m);

struct domain_plan {
  std::vector<std::string> views = {"main"};  ///< created in order; the first is the default
  step_mode mode = step_mode::fast;
  bool mode_chosen = false;  ///< the config named the mode (else the driver may advise one)
  std::map<drv::vcpu_id, std::string> vcpu_views;  ///< VCPUs whose home is not the first view
  std::vector<breakpoint_def> breakpoints;
  /// The kernel's symbol table (`profile =`): symbols, the kernel's identity, the offsets
  /// that name a hit's process. None: physical targets only, no process in hits.
  std::shared_ptr<const drv::kernel_profile> profile;
  /// True if `other` needs no new views, step mode or kernel: only breakpoints differ.
  bool same_shape(const domain_plan& other) const {
    return views == other.views && mode == other.mode && mode_chosen == other.mode_chosen &&
           vcpu_views == other.vcpu_views && same_kernel(other);
  }
  /// The same profile file for the same kernel build (a reload re-reads it).
  bool same_kernel(const domain_plan& other) const {
    if (!profile || !other.profile)
      return !profile && !other.profile;
    return profile->path == other.profile->path && profile->banner == other.profile->banner &&
           profile->pdb == other.profile->pdb;
  }
};

}  // namespace vmitap
