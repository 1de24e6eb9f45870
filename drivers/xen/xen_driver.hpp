#pragma once

// The driver port over Xen 4.17 (libxenctrl, libxenevtchn, libxenforeignmemory, libxenstore):
// lists domains, watches them start and stop through xenstore, attaches sessions.

#include "drivers/driver.hpp"
#include "drivers/xen/xen_api.hpp"

namespace vmitap::xen {

/// Opens Xen's handles through `api` (real_xen_api() in production). Without Xen it fails
/// with one clear line (ec::no_hypervisor) and Xen's libraries print nothing.
caf::expected<std::shared_ptr<drv::driver>> open_xen_driver(const xen_api& api);

/// Whether fast singlestep can be relied on for Xen `major.minor` with `extra` (".4", "-rc").
drv::capabilities capabilities_of(int major, int minor, const std::string& extra);

}  // namespace vmitap::xen
