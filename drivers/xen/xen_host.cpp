#include "drivers/xen/xen_host.hpp"

#include "drivers/error.hpp"

#include <cstdlib>
#include <string>

namespace vmitap::xen {

xen_host::~xen_host() {
  if (xsh)
    api.xs_close(xsh);
  if (xch)
    api.xc_interface_close(xch);
  if (logger)
    api.xtl_logger_destroy(logger);
}

std::optional<xc_domaininfo_t> xen_host::domain(drv::domain_id id) const {
  xc_domaininfo_t info{};
  // getinfolist returns domains with id >= first: check it is this one.
  if (api.xc_domain_getinfolist(xch, id, 1, &info) != 1 || info.domain != id)
    return std::nullopt;
  return info;
}

std::string xen_host::name_of(drv::domain_id id) const {
  if (!xsh)
    return {};
  unsigned int len = 0;
  auto path = "/local/domain/" + std::to_string(id) + "/name";
  auto* value = static_cast<char*>(api.xs_read(xsh, XBT_NULL, path.c_str(), &len));
  if (!value)
    return {};
  std::string name(value, len);
  std::free(value);
  return name;
}

drv::domain_info xen_host::info_of(const xc_domaininfo_t& d) const {
  drv::domain_info out;
  out.id = d.domain;
  out.name = name_of(d.domain);
  out.vcpus = d.max_vcpu_id + 1;
  out.state = (d.flags & XEN_DOMINF_dying)      ? drv::domain_state::dying
              : (d.flags & XEN_DOMINF_shutdown) ? drv::domain_state::dying
              : (d.flags & XEN_DOMINF_paused)   ? drv::domain_state::paused
                                                : drv::domain_state::running;
  out.max_gfn = d.max_pages ? d.max_pages - 1 : 0;  // an estimate; a session reads the real one
  return out;
}

caf::error call_error(const xen_host& host, drv::domain_id id, const char* call, int err) {
  auto d = host.domain(id);
  if (!d || (d->flags & (XEN_DOMINF_dying | XEN_DOMINF_shutdown)))
    return make_error(ec::domain_dead,
                      std::string(call) + ": domain " + std::to_string(id) + " is dying or gone");
  return make_error(ec::driver_call_failed, call, err);
}

}  // namespace vmitap::xen
