#pragma once

// The fake Xen's private parts, shared by its files (see fake_xen.hpp for what it fakes):
// Xen's state per domain, event channel and xenstore handle, and the seam's functions.
//   fake_xen.cpp           the fake itself: the seam's table, recording, injected failures
//   fake_xen_xenctrl.cpp   libxenctrl (and xentoollog): control calls on a domain
//   fake_xen_evtchn.cpp    libxenevtchn and libxenforeignmemory
//   fake_xen_xenstore.cpp  libxenstore: names and watches
//   fake_xen_ring.cpp      Xen's side of the vm_event ring and vm_event_resume

#include "tests/support/fake_xen.hpp"

#include <cerrno>
#include <optional>

namespace vmitap::testing {

struct fake_xen::domain_state {
  uint32_t id = 0;
  std::shared_ptr<sim::domain> dom;
  std::mutex control;  // one control call at a time, as Xen's domctl lock does

  // Under the fake's mutex_:
  uint64_t session = 0;  // the sim session while one is attached
  uint32_t pauses = 0;   // xc_domain_pause calls not yet undone
  uint64_t altp2m_param = 0;
  bool altp2m_active = false;
  bool singlestep_monitor = false;
  bool monitor = false;
  evtchn_port_t remote_port = 0;
  evtchn* bound = nullptr;
  evtchn_port_t local_port = 0;
  bool fire_at_bind = false;

  // Xen's side of the ring, under ring_mutex:
  std::mutex ring_mutex;
  void* page = nullptr;
  vm_event_front_ring_t front{};
  std::deque<vm_event_request_t> waiting;                 // Xen's waitqueue: no free slot yet
  std::vector<std::optional<vm_event_request_t>> paused;  // per VCPU: what it waits on
};

struct fake_xen::evtchn {
  int fd = -1;  // eventfd (semaphore): one read per pending port
  std::mutex mutex;
  struct port {
    uint32_t domid = 0;
    bool masked = false;
    bool pending = false;  // fired while masked: fires again at unmask
  };
  std::map<evtchn_port_t, port> ports;
  std::deque<evtchn_port_t> ready;
  evtchn_port_t next_port = 1;
};

struct fake_xen::xs {
  int rd = -1, wr = -1;
  std::vector<std::pair<std::string, std::string>> watches;  // (path, token)
  std::deque<std::pair<std::string, std::string>> events;
};

// --- the seam's functions ---------------------------------------------------------------

struct fake_xen::impl {
  static inline fake_xen* current = nullptr;  // the fake the seam routes to
  // What xc_interface*, the logger and foreign-memory handles point to.
  static inline int dummy_handle;

  static fake_xen& f() { return *current; }

  /// Records `name(domid)` and returns the injected errno, if any.
  static int enter(const char* name, std::optional<uint32_t> domid = std::nullopt) {
    std::lock_guard g{f().mutex_};
    f().calls_.push_back(domid ? std::string(name) + "(" + std::to_string(*domid) + ")" : name);
    return f().failing(name);
  }
  static int hot(const char* name) {
    std::lock_guard g{f().mutex_};
    return f().failing(name);
  }
  static int fail(int err) {
    errno = err;
    return -1;
  }

  /// A control call on a domain: recorded, injectable, ESRCH if Xen has no such domain (or
  /// it is dying and `dying_ok` is false), serialized per domain. `body` returns an errno.
  template <class Body>
  static int control(const char* name, uint32_t domid, bool dying_ok, Body&& body) {
    if (int err = enter(name, domid))
      return fail(err);
    domain_state* d;
    {
      std::lock_guard g{f().mutex_};
      d = f().state_of(domid);
    }
    if (!d)
      return fail(ESRCH);
    std::unique_lock c{d->control};
    if (d->dom->state() != drv::domain_state::running && !dying_ok)
      return fail(ESRCH);
    int err = body(*d);
    c.unlock();
    f().release_if_idle(*d);
    return err ? fail(err) : 0;
  }

  /// The sim session of `d`, attaching one if needed (d.control held).
  static uint64_t session(domain_state& d);
  /// altp2m ops other than get/set state need it on (and the host and domain able to).
  static int altp2m_ready(domain_state& d, bool need_active);

  // xentoollog
  static xentoollog_logger_stdiostream* createlogger(FILE*, xentoollog_level, unsigned);
  static void logger_destroy(xentoollog_logger*);
  // xenctrl
  static xc_interface* interface_open(xentoollog_logger*, xentoollog_logger*, unsigned);
  static int interface_close(xc_interface*);
  static int version(xc_interface*, int cmd, void* arg);
  static int getinfolist(xc_interface*, uint32_t first, unsigned max, xc_domaininfo_t* out);
  static int get_version(xc_interface*);
  static int monitor_caps(xc_interface*, uint32_t domid, uint32_t* caps);
  static int maximum_gpfn(xc_interface*, uint32_t domid, xen_pfn_t* gpfns);
  static int pause(xc_interface*, uint32_t domid);
  static int unpause(xc_interface*, uint32_t domid);
  static void* monitor_enable(xc_interface*, uint32_t domid, uint32_t* port);
  static int monitor_disable(xc_interface*, uint32_t domid);
  static int monitor_singlestep(xc_interface*, uint32_t domid, bool enable);
  static int param_get(xc_interface*, uint32_t domid, uint32_t param, uint64_t* value);
  static int param_set(xc_interface*, uint32_t domid, uint32_t param, uint64_t value);
  static int altp2m_get_state(xc_interface*, uint32_t domid, bool* state);
  static int altp2m_set_state(xc_interface*, uint32_t domid, bool state);
  static int create_view(xc_interface*, uint32_t domid, xenmem_access_t access, uint16_t* view);
  static int destroy_view(xc_interface*, uint32_t domid, uint16_t view);
  static int switch_view(xc_interface*, uint32_t domid, uint16_t view);
  static int set_access_multi(xc_interface*, uint32_t domid, uint16_t view, uint8_t* access,
                              uint64_t* gfns, uint32_t nr);
  static int get_access_in(domain_state& d, uint16_t view, uint64_t gfn, xenmem_access_t* out);
  static int altp2m_get_access(xc_interface*, uint32_t domid, uint16_t view, xen_pfn_t gfn,
                               xenmem_access_t* out);
  static int get_access(xc_interface*, uint32_t domid, uint64_t gfn, xenmem_access_t* out);
  static int debug_control(xc_interface*, uint32_t domid, uint32_t op, uint32_t vcpu);
  static int hvm_getcontext_partial(xc_interface*, uint32_t domid, uint16_t type, uint16_t instance,
                                    void* ctx, uint32_t size);

  // xenevtchn
  static xenevtchn_handle* evtchn_open(xentoollog_logger*, unsigned);
  static evtchn& ev(xenevtchn_handle* h) { return *reinterpret_cast<evtchn*>(h); }
  static int evtchn_close(xenevtchn_handle* h);
  static int evtchn_fd(xenevtchn_handle* h);
  static int evtchn_notify(xenevtchn_handle* h, evtchn_port_t port);
  static xenevtchn_port_or_error_t bind(xenevtchn_handle* h, uint32_t domid, evtchn_port_t remote);
  static int unbind(xenevtchn_handle* h, evtchn_port_t port);
  static xenevtchn_port_or_error_t pending(xenevtchn_handle* h);
  static int unmask(xenevtchn_handle* h, evtchn_port_t port);
  // xenforeignmemory
  static xenforeignmemory_handle* fmem_open(xentoollog_logger*, unsigned);
  static int fmem_close(xenforeignmemory_handle*);
  static void* fmem_map(xenforeignmemory_handle*, uint32_t domid, int prot, size_t num,
                        const xen_pfn_t* pfns, int* errs);
  static int fmem_unmap(xenforeignmemory_handle*, void* addr, size_t num);

  // xenstore
  static struct xs_handle* xs_open(unsigned long);
  static xs& store(struct xs_handle* h) { return *reinterpret_cast<xs*>(h); }
  static void xs_close(struct xs_handle* h);
  static void* xs_read(struct xs_handle*, xs_transaction_t, const char* path, unsigned int* len);
  static void queue_watch(xs& x, const std::string& path, const std::string& token);
  static bool xs_watch(struct xs_handle* h, const char* path, const char* token);
  static bool xs_unwatch(struct xs_handle* h, const char* path, const char* token);
  static int xs_fileno(struct xs_handle* h);
  static char** xs_check_watch(struct xs_handle* h);

  // the ring page xc_monitor_enable mapped
  static int unmap_ring(void* page, size_t);
};

}  // namespace vmitap::testing
