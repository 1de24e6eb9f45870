// The seam filled from the real libraries: the only file that names Xen's functions.

#include "drivers/xen/xen_api.hpp"

#include <sys/mman.h>

namespace vmitap::xen {

const xen_api& real_xen_api() {
  static const xen_api api = {
    ::xtl_createlogger_stdiostream,
    ::xtl_logger_destroy,
    ::xc_interface_open,
    ::xc_interface_close,
    ::xc_version,
    ::xc_domain_getinfolist,
    ::xc_vm_event_get_version,
    ::xc_monitor_get_capabilities,
    ::xc_domain_maximum_gpfn,
    ::xc_domain_pause,
    ::xc_domain_unpause,
    ::xc_monitor_enable,
    ::xc_monitor_disable,
    ::xc_monitor_singlestep,
    ::xc_hvm_param_get,
    ::xc_hvm_param_set,
    ::xc_altp2m_get_domain_state,
    ::xc_altp2m_set_domain_state,
    ::xc_altp2m_create_view,
    ::xc_altp2m_destroy_view,
    ::xc_altp2m_switch_to_view,
    ::xc_altp2m_set_mem_access_multi,
    ::xc_altp2m_get_mem_access,
    ::xc_get_mem_access,
    ::xc_domain_debug_control,
    ::xc_domain_hvm_getcontext_partial,
    ::xenevtchn_open,
    ::xenevtchn_close,
    ::xenevtchn_fd,
    ::xenevtchn_notify,
    ::xenevtchn_bind_interdomain,
    ::xenevtchn_unbind,
    ::xenevtchn_pending,
    ::xenevtchn_unmask,
    ::xenforeignmemory_open,
    ::xenforeignmemory_close,
    ::xenforeignmemory_map,
    ::xenforeignmemory_unmap,
    ::xs_open,
    ::xs_close,
    ::xs_read,
    ::xs_watch,
    ::xs_unwatch,
    ::xs_fileno,
    ::xs_check_watch,
    ::munmap,
  };
  return api;
}

}  // namespace vmitap::xen
