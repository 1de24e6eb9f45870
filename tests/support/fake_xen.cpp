#include "tests/support/fake_xen.hpp"

#include "drivers/error.hpp"
#include "drivers/xen/codec.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <optional>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

namespace vmitap::testing {

namespace {

fake_xen* current = nullptr;  // the fake the seam routes to

int dummy_handle;  // what xc_interface*, the logger and foreign-memory handles point to

/// Xen's errno for what the sim reported.
int errno_of(const caf::error& err) {
  switch (code_of(err)) {
    case ec::driver_call_failed: {
      auto text = context_of(err);
      if (auto at = text.rfind("(errno "); at != std::string::npos)
        return std::atoi(text.c_str() + at + 7);
      return EIO;
    }
    case ec::domain_dead:
    case ec::not_attached:
    case ec::gfn_out_of_range:
      return ESRCH;
    case ec::view_in_use:
    case ec::already_attached:
      return EBUSY;
    default:
      return EINVAL;
  }
}

bool violates(uint32_t attempted, drv::page_access now) {
  auto a = uint8_t(now);
  return ((attempted & MEM_ACCESS_R) && !(a & 1)) || ((attempted & MEM_ACCESS_W) && !(a & 2))
         || ((attempted & MEM_ACCESS_X) && !(a & 4));
}

}  // namespace

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
  std::deque<vm_event_request_t> waiting;  // Xen's waitqueue: no free slot yet
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
  static uint64_t session(domain_state& d) {
    {
      std::lock_guard g{f().mutex_};
      if (d.session)
        return d.session;
    }
    auto s = d.dom->attach();
    if (!s)
      return 0;
    uint32_t pauses;
    {
      std::lock_guard g{f().mutex_};
      d.session = *s;
      pauses = d.pauses;
    }
    for (uint32_t i = 0; i < pauses; ++i)
      d.dom->pause(*s);  // Xen's domain was paused before the sim saw it
    return *s;
  }

  /// altp2m ops other than get/set state need it on (and the host and domain able to).
  static int altp2m_ready(domain_state& d, bool need_active) {
    std::lock_guard g{f().mutex_};
    if (!f().altp2m_supported)
      return EOPNOTSUPP;
    if (d.altp2m_param == XEN_ALTP2M_disabled)
      return EINVAL;
    if (need_active && !d.altp2m_active)
      return EOPNOTSUPP;
    return 0;
  }

  // xentoollog
  static xentoollog_logger_stdiostream* createlogger(FILE*, xentoollog_level, unsigned) {
    return reinterpret_cast<xentoollog_logger_stdiostream*>(&dummy_handle);
  }
  static void logger_destroy(xentoollog_logger*) {}

  // xenctrl
  static xc_interface* interface_open(xentoollog_logger*, xentoollog_logger*, unsigned) {
    if (int err = enter("xc_interface_open")) {
      errno = err;
      return nullptr;
    }
    if (!f().present) {
      errno = ENOENT;
      return nullptr;
    }
    return reinterpret_cast<xc_interface*>(&dummy_handle);
  }
  static int interface_close(xc_interface*) { return 0; }

  static int version(xc_interface*, int cmd, void* arg) {
    if (cmd == XENVER_version)
      return (f().major << 16) | f().minor;
    if (cmd == XENVER_extraversion) {
      auto* out = static_cast<char*>(arg);
      std::memset(out, 0, XEN_EXTRAVERSION_LEN);
      std::strncpy(out, f().extraversion.c_str(), XEN_EXTRAVERSION_LEN - 1);
      return 0;
    }
    return fail(ENOSYS);
  }

  static int getinfolist(xc_interface*, uint32_t first, unsigned max, xc_domaininfo_t* out) {
    if (int err = hot("xc_domain_getinfolist"))
      return fail(err);
    unsigned n = 0;
    auto add = [&](xc_domaininfo_t info) {
      if (n < max && info.domain >= first)
        out[n++] = info;
    };
    xc_domaininfo_t dom0{};
    dom0.domain = 0;
    dom0.flags = XEN_DOMINF_running;  // PV: never a guest vmitap monitors
    dom0.max_vcpu_id = 1;
    add(dom0);
    for (auto& dom : f().hv_->domains()) {
      auto info = dom->info();
      xc_domaininfo_t x{};
      x.domain = domid_t(info.id);
      x.flags = XEN_DOMINF_hvm_guest | XEN_DOMINF_hap;
      if (dom->state() != drv::domain_state::running)
        x.flags |= XEN_DOMINF_dying;
      {
        std::lock_guard g{f().mutex_};
        auto* d = f().state_of(info.id);
        if (d && d->pauses)
          x.flags |= XEN_DOMINF_paused;
      }
      x.tot_pages = x.max_pages = info.max_gfn + 1;
      x.max_vcpu_id = info.vcpus - 1;
      x.nr_online_vcpus = info.vcpus;
      add(x);
    }
    return int(n);
  }

  static int get_version(xc_interface*) { return f().vm_event_version; }

  static int monitor_caps(xc_interface*, uint32_t domid, uint32_t* caps) {
    return control("xc_monitor_get_capabilities", domid, false, [&](domain_state&) {
      *caps = (1u << (XEN_DOMCTL_MONITOR_EVENT_VMEXIT + 1)) - 1;
      if (!f().mtf)
        *caps &= ~(1u << XEN_DOMCTL_MONITOR_EVENT_SINGLESTEP);
      return 0;
    });
  }

  static int maximum_gpfn(xc_interface*, uint32_t domid, xen_pfn_t* gpfns) {
    return control("xc_domain_maximum_gpfn", domid, false, [&](domain_state& d) {
      *gpfns = d.dom->info().max_gfn;
      return 0;
    });
  }

  static int pause(xc_interface*, uint32_t domid) {
    return control("xc_domain_pause", domid, false, [&](domain_state& d) {
      uint64_t s;
      {
        std::lock_guard g{f().mutex_};
        ++d.pauses;
        s = d.session;
      }
      if (s)
        d.dom->pause(s);  // synchronous: every request raised is with Xen when it returns
      return 0;
    });
  }

  static int unpause(xc_interface*, uint32_t domid) {
    return control("xc_domain_unpause", domid, false, [&](domain_state& d) {
      uint64_t s;
      {
        std::lock_guard g{f().mutex_};
        if (d.pauses == 0)
          return EINVAL;  // domain_unpause_by_systemcontroller: nothing to undo
        --d.pauses;
        s = d.session;
      }
      if (s)
        d.dom->resume(s);
      return 0;
    });
  }

  static void* monitor_enable(xc_interface*, uint32_t domid, uint32_t* port) {
    void* page = nullptr;
    int rc = control("xc_monitor_enable", domid, false, [&](domain_state& d) {
      {
        std::lock_guard g{f().mutex_};
        if (d.monitor)
          return EBUSY;
      }
      auto s = session(d);
      if (!s)
        return EBUSY;  // the sim is monitored by something else
      page = mmap(nullptr, XC_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (page == MAP_FAILED)
        return ENOMEM;
      auto* sring = static_cast<vm_event_sring_t*>(page);
      auto first = f().first_index;
      {
        std::lock_guard r{d.ring_mutex};
        SHARED_RING_INIT(sring);
        FRONT_RING_ATTACH(&d.front, sring, first, XC_PAGE_SIZE);
        sring->req_prod = sring->rsp_prod = first;
        sring->req_event = sring->rsp_event = first + 1;
        d.page = page;
        d.waiting.clear();
        d.paused.assign(d.dom->info().vcpus, std::nullopt);
      }
      {
        std::lock_guard g{f().mutex_};
        d.monitor = true;
        d.remote_port = 100 + d.id;
        *port = d.remote_port;
      }
      auto* fake = &f();
      auto* dp = &d;
      if (auto err = d.dom->start_events(s, [fake, dp](const drv::event& ev) { fake->raise(*dp, ev); }))
        return errno_of(err);
      return 0;
    });
    return rc == 0 ? page : nullptr;
  }

  static int monitor_disable(xc_interface*, uint32_t domid) {
    return control("xc_monitor_disable", domid, true, [&](domain_state& d) {
      size_t stranded = 0;
      {
        std::lock_guard r{d.ring_mutex};
        if (!d.waiting.empty())
          return EBUSY;  // VCPUs sleep on the waitqueue for ring space
        for (auto& p : d.paused)
          stranded += p.has_value();
        d.paused.clear();
      }
      std::lock_guard g{f().mutex_};
      if (!d.monitor)
        return 0;
      d.monitor = false;
      if (stranded)
        f().violations_.push_back("xc_monitor_disable(" + std::to_string(d.id) + "): "
                                  + std::to_string(stranded)
                                  + " VCPUs still wait for an answer and stay paused");
      return 0;
    });
  }

  static int monitor_singlestep(xc_interface*, uint32_t domid, bool enable) {
    return control("xc_monitor_singlestep", domid, false, [&](domain_state& d) {
      std::lock_guard g{f().mutex_};
      if (!f().mtf)
        return EOPNOTSUPP;
      if (d.singlestep_monitor == enable)
        return EEXIST;
      d.singlestep_monitor = enable;
      return 0;
    });
  }

  static int param_get(xc_interface*, uint32_t domid, uint32_t param, uint64_t* value) {
    return control("xc_hvm_param_get", domid, false, [&](domain_state& d) {
      std::lock_guard g{f().mutex_};
      *value = param == HVM_PARAM_ALTP2M ? d.altp2m_param : 0;
      return 0;
    });
  }

  static int param_set(xc_interface*, uint32_t domid, uint32_t param, uint64_t value) {
    return control("xc_hvm_param_set", domid, false, [&](domain_state& d) {
      std::lock_guard g{f().mutex_};
      if (param != HVM_PARAM_ALTP2M)
        return 0;
      if (value > XEN_ALTP2M_limited)
        return EINVAL;
      if (d.altp2m_param != XEN_ALTP2M_disabled && d.altp2m_param != value)
        return EEXIST;
      d.altp2m_param = value;
      return 0;
    });
  }

  static int altp2m_get_state(xc_interface*, uint32_t domid, bool* state) {
    return control("xc_altp2m_get_domain_state", domid, false, [&](domain_state& d) {
      if (int err = altp2m_ready(d, false))
        return err;
      std::lock_guard g{f().mutex_};
      *state = d.altp2m_active;
      return 0;
    });
  }

  static int altp2m_set_state(xc_interface*, uint32_t domid, bool state) {
    return control("xc_altp2m_set_domain_state", domid, false, [&](domain_state& d) {
      if (int err = altp2m_ready(d, false))
        return err;
      {
        std::lock_guard g{f().mutex_};
        if (d.altp2m_active == state)
          return 0;
        d.altp2m_active = state;
      }
      if (!state) {
        // Every VCPU back to the host p2m, and every view flushed.
        auto s = session(d);
        d.dom->switch_all(s, 0);
        for (drv::view_id v = 1; v < drv::max_views; ++v)
          d.dom->destroy_view(s, v);
      }
      return 0;
    });
  }

  static int create_view(xc_interface*, uint32_t domid, xenmem_access_t access, uint16_t* view) {
    return control("xc_altp2m_create_view", domid, false, [&](domain_state& d) {
      if (int err = altp2m_ready(d, true))
        return err;
      auto v = d.dom->create_view(session(d), drv::page_access(access));
      if (!v)
        return EINVAL;  // all views in use
      *view = *v;
      return 0;
    });
  }

  static int destroy_view(xc_interface*, uint32_t domid, uint16_t view) {
    return control("xc_altp2m_destroy_view", domid, false, [&](domain_state& d) {
      if (int err = altp2m_ready(d, true))
        return err;
      // p2m_destroy_altp2m_by_id: view 0, an absent view and a view in use are all EBUSY.
      return d.dom->destroy_view(session(d), view) ? EBUSY : 0;
    });
  }

  static int switch_view(xc_interface*, uint32_t domid, uint16_t view) {
    return control("xc_altp2m_switch_to_view", domid, false, [&](domain_state& d) {
      if (int err = altp2m_ready(d, true))
        return err;
      return d.dom->switch_all(session(d), view) ? EINVAL : 0;
    });
  }

  static int set_access_multi(xc_interface*, uint32_t domid, uint16_t view, uint8_t* access,
                              uint64_t* gfns, uint32_t nr) {
    return control("xc_altp2m_set_mem_access_multi", domid, false, [&](domain_state& d) {
      if (int err = altp2m_ready(d, true))
        return err;
      std::vector<drv::access_change> changes(nr);
      for (uint32_t i = 0; i < nr; ++i) {
        if (access[i] > XENMEM_access_rwx)
          return EINVAL;
        changes[i] = {gfns[i], drv::page_access(access[i])};
      }
      auto err = d.dom->set_access(session(d), view, changes);
      return err ? errno_of(err) : 0;
    });
  }

  static int get_access_in(domain_state& d, uint16_t view, uint64_t gfn, xenmem_access_t* out) {
    drv::gfn_t g = gfn;
    drv::page_access a{};
    if (auto err = d.dom->get_access(session(d), view, {&g, 1}, {&a, 1}))
      return errno_of(err);
    *out = xenmem_access_t(a);
    return 0;
  }

  static int altp2m_get_access(xc_interface*, uint32_t domid, uint16_t view, xen_pfn_t gfn,
                               xenmem_access_t* out) {
    return control("xc_altp2m_get_mem_access", domid, false, [&](domain_state& d) {
      if (int err = altp2m_ready(d, true))
        return err;
      return get_access_in(d, view, gfn, out);
    });
  }

  static int get_access(xc_interface*, uint32_t domid, uint64_t gfn, xenmem_access_t* out) {
    return control("xc_get_mem_access", domid, false,
                   [&](domain_state& d) { return get_access_in(d, 0, gfn, out); });
  }

  static int debug_control(xc_interface*, uint32_t domid, uint32_t op, uint32_t vcpu) {
    return control("xc_domain_debug_control", domid, false, [&](domain_state& d) {
      if (vcpu >= d.dom->info().vcpus)
        return EINVAL;
      if (op != XEN_DOMCTL_DEBUG_OP_SINGLE_STEP_ON && op != XEN_DOMCTL_DEBUG_OP_SINGLE_STEP_OFF)
        return EINVAL;
      auto err = d.dom->set_singlestep(session(d), vcpu, op == XEN_DOMCTL_DEBUG_OP_SINGLE_STEP_ON);
      return err ? errno_of(err) : 0;
    });
  }

  // xenevtchn
  static xenevtchn_handle* evtchn_open(xentoollog_logger*, unsigned) {
    if (int err = enter("xenevtchn_open")) {
      errno = err;
      return nullptr;
    }
    auto e = std::make_unique<evtchn>();
    e->fd = eventfd(0, EFD_SEMAPHORE | EFD_CLOEXEC);
    std::lock_guard g{f().mutex_};
    f().evtchns_.insert(e.get());
    return reinterpret_cast<xenevtchn_handle*>(e.release());
  }

  static evtchn& ev(xenevtchn_handle* h) { return *reinterpret_cast<evtchn*>(h); }

  static int evtchn_close(xenevtchn_handle* h) {
    enter("xenevtchn_close");
    std::unique_ptr<evtchn> e{&ev(h)};
    std::lock_guard g{f().mutex_};
    for (auto& [id, d] : f().domains_)
      if (d->bound == e.get())
        d->bound = nullptr;
    f().evtchns_.erase(e.get());
    close(e->fd);
    return 0;
  }

  static int evtchn_fd(xenevtchn_handle* h) { return ev(h).fd; }

  static int evtchn_notify(xenevtchn_handle* h, evtchn_port_t port) {
    if (int err = hot("xenevtchn_notify"))
      return fail(err);
    uint32_t domid;
    {
      std::lock_guard e{ev(h).mutex};
      auto i = ev(h).ports.find(port);
      if (i == ev(h).ports.end())
        return fail(EINVAL);
      domid = i->second.domid;
    }
    domain_state* d;
    {
      std::lock_guard g{f().mutex_};
      ++f().notifies_;
      auto i = f().domains_.find(domid);
      d = i == f().domains_.end() ? nullptr : i->second.get();
    }
    if (d)
      f().resume(*d);  // evtchn_send → vm_event_resume, synchronously
    return 0;
  }

  static xenevtchn_port_or_error_t bind(xenevtchn_handle* h, uint32_t domid, evtchn_port_t remote) {
    if (int err = enter("xenevtchn_bind_interdomain", domid))
      return fail(err);
    evtchn_port_t local;
    bool fire_now;
    {
      std::lock_guard g{f().mutex_};
      auto* d = f().state_of(domid);
      if (!d)
        return fail(ESRCH);
      if (!d->monitor || d->remote_port != remote)
        return fail(EINVAL);
      std::lock_guard e{ev(h).mutex};
      local = ev(h).next_port++;
      ev(h).ports[local] = {domid};
      d->bound = &ev(h);
      d->local_port = local;
      fire_now = std::exchange(d->fire_at_bind, false);
    }
    if (fire_now)
      f().fire(ev(h), local);
    return xenevtchn_port_or_error_t(local);
  }

  static int unbind(xenevtchn_handle* h, evtchn_port_t port) {
    if (int err = enter("xenevtchn_unbind"))
      return fail(err);
    std::lock_guard g{f().mutex_};
    for (auto& [id, d] : f().domains_)
      if (d->bound == &ev(h) && d->local_port == port)
        d->bound = nullptr;
    std::lock_guard e{ev(h).mutex};
    return ev(h).ports.erase(port) ? 0 : fail(EINVAL);
  }

  static xenevtchn_port_or_error_t pending(xenevtchn_handle* h) {
    if (int err = hot("xenevtchn_pending"))
      return fail(err);
    uint64_t one;
    if (read(ev(h).fd, &one, sizeof one) != sizeof one)
      return -1;
    std::lock_guard e{ev(h).mutex};
    auto port = ev(h).ready.front();
    ev(h).ready.pop_front();
    return xenevtchn_port_or_error_t(port);
  }

  static int unmask(xenevtchn_handle* h, evtchn_port_t port) {
    if (int err = hot("xenevtchn_unmask"))
      return fail(err);
    bool again = false;
    {
      std::lock_guard e{ev(h).mutex};
      auto i = ev(h).ports.find(port);
      if (i == ev(h).ports.end())
        return fail(EINVAL);
      i->second.masked = false;
      again = std::exchange(i->second.pending, false);
    }
    if (again)
      f().fire(ev(h), port);
    return 0;
  }

  // xenforeignmemory
  static xenforeignmemory_handle* fmem_open(xentoollog_logger*, unsigned) {
    if (int err = enter("xenforeignmemory_open")) {
      errno = err;
      return nullptr;
    }
    return reinterpret_cast<xenforeignmemory_handle*>(&dummy_handle);
  }
  static int fmem_close(xenforeignmemory_handle*) {
    enter("xenforeignmemory_close");
    return 0;
  }

  static void* fmem_map(xenforeignmemory_handle*, uint32_t domid, int prot, size_t num,
                        const xen_pfn_t* pfns, int* errs) {
    void* out = nullptr;
    int rc = control("xenforeignmemory_map", domid, false, [&](domain_state& d) {
      auto s = session(d);
      auto size = num * XC_PAGE_SIZE;
      void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED)
        return ENOMEM;
      auto* bytes = static_cast<std::byte*>(p);
      for (size_t i = 0; i < num; ++i) {
        auto err = d.dom->read_physical(s, pfns[i] * XC_PAGE_SIZE, {bytes + i * XC_PAGE_SIZE, XC_PAGE_SIZE});
        if (errs)
          errs[i] = err ? -EFAULT : 0;
        else if (err) {
          munmap(p, size);
          return EFAULT;
        }
      }
      mprotect(p, size, prot);
      out = p;
      return 0;
    });
    return rc == 0 ? out : nullptr;
  }

  static int fmem_unmap(xenforeignmemory_handle*, void* addr, size_t num) {
    if (int err = hot("xenforeignmemory_unmap"))
      return fail(err);
    return munmap(addr, num * XC_PAGE_SIZE);
  }

  // xenstore
  static struct xs_handle* xs_open(unsigned long) {
    if (int err = enter("xs_open")) {
      errno = err;
      return nullptr;
    }
    auto h = std::make_unique<xs>();
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0)
      return nullptr;
    h->rd = fds[0];
    h->wr = fds[1];
    std::lock_guard g{f().mutex_};
    f().xs_handles_.insert(h.get());
    return reinterpret_cast<struct xs_handle*>(h.release());
  }

  static xs& store(struct xs_handle* h) { return *reinterpret_cast<xs*>(h); }

  static void xs_close(struct xs_handle* h) {
    std::unique_ptr<xs> x{&store(h)};
    std::lock_guard g{f().mutex_};
    f().xs_handles_.erase(x.get());
    close(x->rd);
    close(x->wr);
  }

  static void* xs_read(struct xs_handle*, xs_transaction_t, const char* path, unsigned int* len) {
    unsigned id = 0;
    char tail[32] = {};
    if (std::sscanf(path, "/local/domain/%u/%31s", &id, tail) == 2 && std::string(tail) == "name") {
      if (auto dom = f().hv_->find(id)) {
        auto name = dom->info().name;
        auto* out = static_cast<char*>(std::malloc(name.size() + 1));
        std::memcpy(out, name.c_str(), name.size() + 1);
        if (len)
          *len = unsigned(name.size());
        return out;
      }
    }
    errno = ENOENT;
    return nullptr;
  }

  static void queue_watch(xs& x, const std::string& path, const std::string& token) {
    x.events.emplace_back(path, token);
    char one = 1;
    [[maybe_unused]] auto n = write(x.wr, &one, 1);
  }

  static bool xs_watch(struct xs_handle* h, const char* path, const char* token) {
    if (int err = enter("xs_watch")) {
      errno = err;
      return false;
    }
    std::lock_guard g{f().mutex_};
    store(h).watches.emplace_back(path, token);
    queue_watch(store(h), path, token);  // a watch fires once when it is set
    return true;
  }

  static bool xs_unwatch(struct xs_handle* h, const char* path, const char* token) {
    std::lock_guard g{f().mutex_};
    return std::erase(store(h).watches, std::pair<std::string, std::string>(path, token)) > 0;
  }

  static int xs_fileno(struct xs_handle* h) { return store(h).rd; }

  static char** xs_check_watch(struct xs_handle* h) {
    std::lock_guard g{f().mutex_};
    auto& x = store(h);
    if (x.events.empty()) {
      errno = EAGAIN;
      return nullptr;
    }
    auto [path, token] = x.events.front();
    x.events.pop_front();
    char one;
    [[maybe_unused]] auto n = read(x.rd, &one, 1);
    // One allocation, as libxenstore makes it: the caller frees it with free().
    auto size = 2 * sizeof(char*) + path.size() + token.size() + 2;
    auto** out = static_cast<char**>(std::malloc(size));
    auto* text = reinterpret_cast<char*>(out + 2);
    std::memcpy(text, path.c_str(), path.size() + 1);
    std::memcpy(text + path.size() + 1, token.c_str(), token.size() + 1);
    out[XS_WATCH_PATH] = text;
    out[XS_WATCH_TOKEN] = text + path.size() + 1;
    return out;
  }

  static int unmap_ring(void* page, size_t) {
    enter("unmap_ring");
    std::lock_guard g{f().mutex_};
    for (auto& [id, d] : f().domains_)
      if (d->page == page)
        return 0;  // Xen's own mapping stays until the fake goes
    f().violations_.push_back("unmap_ring: not a ring page");
    return fail(EINVAL);
  }
};

namespace {

const xen::xen_api fake_api = {
  fake_xen::impl::createlogger, fake_xen::impl::logger_destroy,
  fake_xen::impl::interface_open, fake_xen::impl::interface_close, fake_xen::impl::version,
  fake_xen::impl::getinfolist, fake_xen::impl::get_version, fake_xen::impl::monitor_caps,
  fake_xen::impl::maximum_gpfn, fake_xen::impl::pause, fake_xen::impl::unpause,
  fake_xen::impl::monitor_enable, fake_xen::impl::monitor_disable,
  fake_xen::impl::monitor_singlestep, fake_xen::impl::param_get, fake_xen::impl::param_set,
  fake_xen::impl::altp2m_get_state, fake_xen::impl::altp2m_set_state,
  fake_xen::impl::create_view, fake_xen::impl::destroy_view, fake_xen::impl::switch_view,
  fake_xen::impl::set_access_multi, fake_xen::impl::altp2m_get_access,
  fake_xen::impl::get_access, fake_xen::impl::debug_control,
  fake_xen::impl::evtchn_open, fake_xen::impl::evtchn_close, fake_xen::impl::evtchn_fd,
  fake_xen::impl::evtchn_notify, fake_xen::impl::bind, fake_xen::impl::unbind,
  fake_xen::impl::pending, fake_xen::impl::unmask,
  fake_xen::impl::fmem_open, fake_xen::impl::fmem_close, fake_xen::impl::fmem_map,
  fake_xen::impl::fmem_unmap,
  fake_xen::impl::xs_open, fake_xen::impl::xs_close, fake_xen::impl::xs_read,
  fake_xen::impl::xs_watch, fake_xen::impl::xs_unwatch, fake_xen::impl::xs_fileno,
  fake_xen::impl::xs_check_watch,
  fake_xen::impl::unmap_ring,
};

}  // namespace

// --- the fake ---------------------------------------------------------------------------

fake_xen::fake_xen(std::shared_ptr<sim::hypervisor> hv) : hv_(std::move(hv)) {
  current = this;
  watch_token_ = hv_->add_watch([this](const drv::domain_change& c) { watch_event(c.started); });
}

fake_xen::~fake_xen() {
  hv_->remove_watch(watch_token_);
  for (auto& [id, d] : domains_) {
    if (d->session)
      d->dom->detach(d->session);  // no request reaches this fake any more
    if (d->page)
      munmap(d->page, XC_PAGE_SIZE);
  }
  for (auto* e : evtchns_) {
    close(e->fd);
    delete e;
  }
  for (auto* x : xs_handles_) {
    close(x->rd);
    close(x->wr);
    delete x;
  }
  current = nullptr;
}

const xen::xen_api& fake_xen::api() const {
  return fake_api;
}

fake_xen::domain_state* fake_xen::state_of(uint32_t domid) {
  auto dom = hv_->find(domid);
  if (!dom)
    return nullptr;
  auto& d = domains_[domid];
  if (!d) {  // the sim never reuses an id
    d = std::make_unique<domain_state>();
    d->id = domid;
    d->dom = dom;
    d->altp2m_param = altp2m_param;
  }
  return d.get();
}

int fake_xen::failing(const char* call) {
  auto i = failures_.find(call);
  if (i == failures_.end())
    return 0;
  int err = i->second.first;
  if (--i->second.second == 0)
    failures_.erase(i);
  return err;
}

void fake_xen::fail_next(const std::string& call, int err, int count) {
  std::lock_guard g{mutex_};
  failures_[call] = {err, count};
}

void fake_xen::violation(std::string what) {
  std::lock_guard g{mutex_};
  violations_.push_back(std::move(what));
}

void fake_xen::release_if_idle(domain_state& d) {
  std::unique_lock c{d.control};
  uint64_t s;
  {
    std::lock_guard g{mutex_};
    if (d.monitor || d.pauses || !d.session)
      return;
    s = std::exchange(d.session, 0);
  }
  d.dom->detach(s);  // the sim's session ends when Xen would hold nothing of vmitap's
}

void fake_xen::put_locked(domain_state& d, const vm_event_request_t& req) {
  *RING_GET_REQUEST(&d.front, d.front.req_prod_pvt) = req;
  ++d.front.req_prod_pvt;
  RING_PUSH_REQUESTS(&d.front);
  if (req.vcpu_id < d.paused.size())
    d.paused[req.vcpu_id] = req;  // vm_event_vcpu_pause: the VCPU waits for its answer
  std::lock_guard g{mutex_};
  max_in_flight_ = std::max<uint64_t>(max_in_flight_, d.front.req_prod_pvt - d.front.rsp_cons);
}

void fake_xen::raise(domain_state& d, const drv::event& ev) {
  vm_event_request_t req;
  xen::to_request(ev, req);
  {
    std::lock_guard r{d.ring_mutex};
    if (!d.page || d.paused.empty()) {
      violation("a request was raised while no monitor ring was enabled");
      return;
    }
    if (!d.waiting.empty() || RING_FREE_REQUESTS(&d.front) == 0) {
      d.waiting.push_back(req);  // the VCPU sleeps on Xen's waitqueue for a slot
      std::lock_guard g{mutex_};
      waitqueue_peak_ = std::max<uint64_t>(waitqueue_peak_, d.waiting.size());
      return;
    }
    put_locked(d, req);
  }
  fire(d);
}

void fake_xen::resume(domain_state& d) {
  std::vector<std::pair<vm_event_response_t, vm_event_request_t>> answered;
  std::vector<vm_event_response_t> orphans;
  bool put = false;
  {
    std::lock_guard r{d.ring_mutex};
    if (!d.page)
      return;
    while (RING_HAS_UNCONSUMED_RESPONSES(&d.front)) {
      vm_event_response_t rsp = *RING_GET_RESPONSE(&d.front, d.front.rsp_cons);
      ++d.front.rsp_cons;
      d.front.sring->rsp_event = d.front.rsp_cons + 1;
      std::lock_guard g{mutex_};
      if (rsp.version != VM_EVENT_INTERFACE_VERSION) {
        ++dropped_;  // printk, and the VCPU stays paused
        continue;
      }
      if (rsp.vcpu_id >= d.paused.size()) {
        ++dropped_;
        orphans.push_back(rsp);  // the sim raised it: it settles its own books
        continue;
      }
      auto& waiting_for = d.paused[rsp.vcpu_id];
      if (!waiting_for) {
        ++ignored_;
        continue;
      }
      answered.emplace_back(rsp, *waiting_for);
      if (rsp.flags & VM_EVENT_FLAG_VCPU_PAUSED)
        waiting_for.reset();
    }
    while (!d.waiting.empty() && RING_FREE_REQUESTS(&d.front) > 0) {
      put_locked(d, d.waiting.front());
      d.waiting.pop_front();
      put = true;
    }
  }
  for (auto& [rsp, req] : answered)
    apply(d, rsp, req);
  uint64_t s;
  {
    std::lock_guard g{mutex_};
    s = d.session;
  }
  for (auto& rsp : orphans)
    d.dom->respond(s, xen::from_response(rsp));
  if (put)
    fire(d);
}

void fake_xen::apply(domain_state& d, const vm_event_response_t& in, const vm_event_request_t& req) {
  auto rsp = in;
  uint64_t s;
  bool singlestep_monitor;
  {
    std::lock_guard g{mutex_};
    s = d.session;
    singlestep_monitor = d.singlestep_monitor;
  }
  auto who = "domain " + std::to_string(d.id) + " vcpu " + std::to_string(rsp.vcpu_id) + ": ";
  if (!(rsp.flags & VM_EVENT_FLAG_VCPU_PAUSED))
    violation(who + "response without VCPU_PAUSED: the VCPU stays paused");
  if (rsp.flags & VM_EVENT_FLAG_TOGGLE_SINGLESTEP) {
    rsp.flags &= ~uint32_t(VM_EVENT_FLAG_FAST_SINGLESTEP);  // TOGGLE wins
  } else if (rsp.flags & VM_EVENT_FLAG_FAST_SINGLESTEP) {
    if (rsp.flags & VM_EVENT_FLAG_EMULATE)
      violation(who + "FAST_SINGLESTEP with EMULATE: p2midx overlays the echoed gfn");
    if (rsp.u.fast_singlestep.p2midx >= drv::max_views)
      rsp.flags &= ~uint32_t(VM_EVENT_FLAG_FAST_SINGLESTEP);  // silently ignored
    if (!singlestep_monitor) {
      violation(who + "FAST_SINGLESTEP without singlestep monitoring: no return to the view");
      rsp.flags &= ~uint32_t(VM_EVENT_FLAG_FAST_SINGLESTEP);
    }
  }
  if (rsp.flags & VM_EVENT_FLAG_EMULATE) {
    // p2m_mem_access_emulate_check: only while the echoed access still violates.
    bool still = false;
    if (rsp.reason == VM_EVENT_REASON_MEM_ACCESS && !(rsp.flags & VM_EVENT_FLAG_FAST_SINGLESTEP)) {
      drv::gfn_t g = rsp.u.mem_access.gfn;
      drv::page_access now{};
      auto view = d.dom->vcpu_view(rsp.vcpu_id);
      still = !d.dom->get_access(s, view, {&g, 1}, {&now, 1}) && violates(rsp.u.mem_access.flags, now);
    }
    if (!still)
      rsp.flags &= ~uint32_t(VM_EVENT_FLAG_EMULATE);
  }
  if (rsp.flags & VM_EVENT_FLAG_SET_REGISTERS) {
    // Xen writes rax–r15, rflags and rip from the response: vmitap may change rip only.
    auto a = rsp.data.regs.x86, b = req.data.regs.x86;
    a.rip = b.rip;
    a.cr3 = b.cr3;
    if (std::memcmp(&a, &b, sizeof a) != 0)
      violation(who + "SET_REGISTERS changed registers other than rip");
  }
  if (auto err = d.dom->respond(s, xen::from_response(rsp)))
    violation(who + "the sim refused the answer: " + render(err));
}

void fake_xen::fire(domain_state& d) {
  evtchn* e;
  evtchn_port_t port;
  {
    std::lock_guard g{mutex_};
    if (!d.bound) {
      d.fire_at_bind = true;  // Xen's side is pending; it shows once someone binds
      return;
    }
    e = d.bound;
    port = d.local_port;
  }
  fire(*e, port);
}

void fake_xen::fire(evtchn& e, evtchn_port_t port) {
  std::lock_guard g{e.mutex};
  auto i = e.ports.find(port);
  if (i == e.ports.end())
    return;
  if (i->second.masked) {
    i->second.pending = true;
    return;
  }
  i->second.masked = true;  // the evtchn driver masks the port until user space unmasks it
  e.ready.push_back(port);
  uint64_t one = 1;
  [[maybe_unused]] auto n = write(e.fd, &one, sizeof one);
}

void fake_xen::watch_event(bool started) {
  std::lock_guard g{mutex_};
  for (auto* x : xs_handles_)
    for (auto& [path, token] : x->watches)
      if (path == (started ? "@introduceDomain" : "@releaseDomain"))
        impl::queue_watch(*x, path, token);
}

std::vector<std::string> fake_xen::calls() const {
  std::lock_guard g{mutex_};
  return calls_;
}

void fake_xen::clear_calls() {
  std::lock_guard g{mutex_};
  calls_.clear();
}

uint64_t fake_xen::notifies() const {
  std::lock_guard g{mutex_};
  return notifies_;
}

uint64_t fake_xen::responses_dropped() const {
  std::lock_guard g{mutex_};
  return dropped_;
}

uint64_t fake_xen::responses_ignored() const {
  std::lock_guard g{mutex_};
  return ignored_;
}

uint64_t fake_xen::max_in_flight() const {
  std::lock_guard g{mutex_};
  return max_in_flight_;
}

uint64_t fake_xen::waitqueue_peak() const {
  std::lock_guard g{mutex_};
  return waitqueue_peak_;
}

std::vector<std::string> fake_xen::violations() const {
  std::lock_guard g{mutex_};
  return violations_;
}

bool fake_xen::altp2m_on(drv::domain_id id) const {
  std::lock_guard g{mutex_};
  auto i = domains_.find(id);
  return i != domains_.end() && i->second->altp2m_active;
}

bool fake_xen::singlestep_monitor_on(drv::domain_id id) const {
  std::lock_guard g{mutex_};
  auto i = domains_.find(id);
  return i != domains_.end() && i->second->singlestep_monitor;
}

bool fake_xen::monitor_enabled(drv::domain_id id) const {
  std::lock_guard g{mutex_};
  auto i = domains_.find(id);
  return i != domains_.end() && i->second->monitor;
}

uint32_t fake_xen::controller_pauses(drv::domain_id id) const {
  std::lock_guard g{mutex_};
  auto i = domains_.find(id);
  return i != domains_.end() ? i->second->pauses : 0;
}

}  // namespace vmitap::testing
