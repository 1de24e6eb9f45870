#pragma once

// Every error vmitap reports, in one place. Drivers, actors and the engine return these inside
// `caf::error` (category "vmitap"), with a structured context that names what failed and why.

#include <caf/atom.hpp>
#include <caf/error.hpp>
#include <caf/make_message.hpp>
#include <caf/message.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace vmitap {

enum class ec : uint8_t {
  none = 0,
  driver_call_failed,       ///< a hypervisor call failed; context: the call and its errno
  no_hypervisor,            ///< the backend's hypervisor is not on this machine
  incompatible_hypervisor,  ///< wrong interface version or a missing capability
  another_monitor,          ///< a monitor ring is already attached to the domain (Xen: EBUSY)
  no_such_domain,
  domain_dead,       ///< the domain died while vmitap worked on it
  already_attached,  ///< this session already monitors the domain
  not_attached,      ///< a call on a session that has ended (or was replaced)
  no_such_vcpu,
  vcpu_not_paused,  ///< a response for a VCPU that waits for none
  no_such_view,
  view_in_use,       ///< destroying a view a VCPU runs in (Xen: EBUSY)
  gfn_out_of_range,  ///< not guest RAM
  invalid_argument,
  breakpoint_not_found,
  duplicate_breakpoint,
  timeout,
  config_invalid,
  io_failed,      ///< a file or stream; context: the call, the path and its errno
  listen_failed,  ///< the metrics exporter could not bind its address
  shutting_down,
  handler_failed,       ///< a hit handler threw; context: what it threw
  kernel_not_found,     ///< no VCPU's registers lead to the kernel a profile describes
  no_kernel_mode_vcpu,  ///< every VCPU runs in user mode: the kernel may not be mapped (KPTI)
  profile_mismatch,     ///< the running kernel is not the one the profile was made for
  not_mapped,           ///< a virtual address whose page is not present
};

/// The category of vmitap's errors in a `caf::error` (CAF_ERROR_CODE_ENUM below).
inline constexpr caf::atom_value error_category = caf::atom("vmitap");

const char* to_string(ec code);

/// Our errors carry their context as values, rendered only when shown (render, context_of):
/// a code alone; a text (what failed and why); a call and the errno it failed with; a call
/// on a path and its errno.
caf::error make_error(ec code);
caf::error make_error(ec code, std::string what);
caf::error make_error(ec code, std::string_view call, int err);
caf::error make_error(ec code, std::string_view call, std::string_view path, int err);

/// The code carried by `err`, or `ec::none` for errors of other categories and no error.
ec code_of(const caf::error& err);

/// True if `err` says the domain is gone: it died while we worked on it, or was destroyed
/// before a call reached it. Either way the domain died; no failure of ours.
bool domain_gone(const caf::error& err);

/// The errno a failed call carried (0: none).
int errno_of(const caf::error& err);

/// The context an error carries, as text (for vmitap's errors: the line without the code).
std::string context_of(const caf::error& err);

/// A human-readable line for any error, vmitap's or CAF's: the one place errors become text.
std::string render(const caf::error& err);

}  // namespace vmitap

CAF_ERROR_CODE_ENUM(vmitap::ec, "vmitap")
