#pragma once

// The seam between drivers/xen and Xen: every call the driver makes goes through this table
// of function pointers, with the exact Xen 4.17 signatures. In production it is filled from
// the real libraries (real_xen_api()); tests fill it with a fake Xen or a recorder.

#include "drivers/xen/xen_headers.hpp"

namespace vmitap::xen {

struct xen_api {
  // xentoollog
  xentoollog_logger_stdiostream* (*xtl_createlogger_stdiostream)(FILE*, xentoollog_level, unsigned);
  void (*xtl_logger_destroy)(xentoollog_logger*);
  // xenctrl
  xc_interface* (*xc_interface_open)(xentoollog_logger*, xentoollog_logger*, unsigned);
  int (*xc_interface_close)(xc_interface*);
  int (*xc_version)(xc_interface*, int, void*);
  int (*xc_domain_getinfolist)(xc_interface*, uint32_t, unsigned int, xc_domaininfo_t*);
  int (*xc_vm_event_get_version)(xc_interface*);
  int (*xc_monitor_get_capabilities)(xc_interface*, uint32_t, uint32_t*);
  int (*xc_domain_maximum_gpfn)(xc_interface*, uint32_t, xen_pfn_t*);
  int (*xc_domain_pause)(xc_interface*, uint32_t);
  int (*xc_domain_unpause)(xc_interface*, uint32_t);
  void* (*xc_monitor_enable)(xc_interface*, uint32_t, uint32_t*);
  int (*xc_monitor_disable)(xc_interface*, uint32_t);
  int (*xc_monitor_singlestep)(xc_interface*, uint32_t, bool);
  int (*xc_hvm_param_get)(xc_interface*, uint32_t, uint32_t, uint64_t*);
  int (*xc_hvm_param_set)(xc_interface*, uint32_t, uint32_t, uint64_t);
  int (*xc_altp2m_get_domain_state)(xc_interface*, uint32_t, bool*);
  int (*xc_altp2m_set_domain_state)(xc_interface*, uint32_t, bool);
  int (*xc_altp2m_create_view)(xc_interface*, uint32_t, xenmem_access_t, uint16_t*);
  int (*xc_altp2m_destroy_view)(xc_interface*, uint32_t, uint16_t);
  int (*xc_altp2m_switch_to_view)(xc_interface*, uint32_t, uint16_t);
  int (*xc_altp2m_set_mem_access_multi)(xc_interface*, uint32_t, uint16_t, uint8_t*, uint64_t*,
                                        uint32_t);
  int (*xc_altp2m_get_mem_access)(xc_interface*, uint32_t, uint16_t, xen_pfn_t, xenmem_access_t*);
  int (*xc_get_mem_access)(xc_interface*, uint32_t, uint64_t, xenmem_access_t*);
  int (*xc_domain_debug_control)(xc_interface*, uint32_t, uint32_t, uint32_t);
  int (*xc_domain_hvm_getcontext_partial)(xc_interface*, uint32_t, uint16_t, uint16_t, void*,
                                          uint32_t);
  // xenevtchn
  xenevtchn_handle* (*xenevtchn_open)(xentoollog_logger*, unsigned int);
  int (*xenevtchn_close)(xenevtchn_handle*);
  int (*xenevtchn_fd)(xenevtchn_handle*);
  int (*xenevtchn_notify)(xenevtchn_handle*, evtchn_port_t);
  xenevtchn_port_or_error_t (*xenevtchn_bind_interdomain)(xenevtchn_handle*, uint32_t,
                                                          evtchn_port_t);
  int (*xenevtchn_unbind)(xenevtchn_handle*, evtchn_port_t);
  xenevtchn_port_or_error_t (*xenevtchn_pending)(xenevtchn_handle*);
  int (*xenevtchn_unmask)(xenevtchn_handle*, evtchn_port_t);
  // xenforeignmemory
  xenforeignmemory_handle* (*xenforeignmemory_open)(xentoollog_logger*, unsigned);
  int (*xenforeignmemory_close)(xenforeignmemory_handle*);
  void* (*xenforeignmemory_map)(xenforeignmemory_handle*, uint32_t, int, size_t, const xen_pfn_t*,
                                int*);
  int (*xenforeignmemory_unmap)(xenforeignmemory_handle*, void*, size_t);
  // xenstore
  struct xs_handle* (*xs_open)(unsigned long);
  void (*xs_close)(struct xs_handle*);
  void* (*xs_read)(struct xs_handle*, xs_transaction_t, const char*, unsigned int*);
  bool (*xs_watch)(struct xs_handle*, const char*, const char*);
  bool (*xs_unwatch)(struct xs_handle*, const char*, const char*);
  int (*xs_fileno)(struct xs_handle*);
  char** (*xs_check_watch)(struct xs_handle*);
  // The ring page xc_monitor_enable mapped (munmap in production).
  int (*unmap_ring)(void*, size_t);
};

/// The table filled from Debian's Xen 4.17 libraries.
const xen_api& real_xen_api();

}  // namespace vmitap::xen
