#pragma once

// What every part of the Xen driver shares: the table of Xen calls, the privileged handles,
// and which domain each live session monitors.

#include "drivers/driver.hpp"
#include "drivers/xen/xen_api.hpp"

#include <map>
#include <memory>
#include <mutex>
#include <optional>

namespace vmitap::xen {

struct xen_host {
  xen_host(const xen_api& a) : api(a) {}
  ~xen_host();
  xen_host(const xen_host&) = delete;
  xen_host& operator=(const xen_host&) = delete;

  const xen_api& api;
  xentoollog_logger* logger = nullptr;  ///< quiet: Xen's libraries print nothing themselves
  xc_interface* xch = nullptr;
  struct xs_handle* xsh = nullptr;
  drv::capabilities caps;

  /// One session per domain at a time; a session's identity is its serial.
  std::mutex mutex;
  std::map<drv::domain_id, uint64_t> attached;
  uint64_t next_serial = 1;

  /// The domain as Xen reports it now; none if it is gone.
  std::optional<xc_domaininfo_t> domain(drv::domain_id id) const;
  /// Its name from xenstore ("" if it has none).
  std::string name_of(drv::domain_id id) const;
  drv::domain_info info_of(const xc_domaininfo_t& d) const;
};

/// "call: strerror (errno N)", or domain_dead if the domain is dying or gone (vm_event
/// calls on a dying domain succeed; every other call fails with ESRCH).
caf::error call_error(const xen_host& host, drv::domain_id id, const char* call, int err);

}  // namespace vmitap::xen
