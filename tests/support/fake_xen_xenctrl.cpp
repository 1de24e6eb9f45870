// The fake's libxenctrl (and xentoollog): control calls on a domain, recorded, made to fail
// on demand, and answered with Xen 4.17's errno values.

#include "tests/support/fake_xen_internal.hpp"

#include "drivers/error.hpp"
#include "drivers/xen/codec.hpp"

#include <sys/mman.h>
#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace vmitap::testing {

namespace {

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

}  // namespace

int fake_xen::impl::altp2m_ready(domain_state& d, bool need_active) {
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
xentoollog_logger_stdiostream* fake_xen::impl::createlogger(FILE*, xentoollog_level, unsigned) {
  return reinterpret_cast<xentoollog_logger_stdiostream*>(&dummy_handle);
}

void fake_xen::impl::logger_destroy(xentoollog_logger*) {}

// xenctrl
xc_interface* fake_xen::impl::interface_open(xentoollog_logger*, xentoollog_logger*, unsigned) {
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

int fake_xen::impl::interface_close(xc_interface*) {
  return 0;
}

int fake_xen::impl::version(xc_interface*, int cmd, void* arg) {
  if (int err = hot("xc_version"))
    return fail(err);
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

int fake_xen::impl::getinfolist(xc_interface*, uint32_t first, unsigned max, xc_domaininfo_t* out) {
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

int fake_xen::impl::get_version(xc_interface*) {
  return f().vm_event_version;
}

int fake_xen::impl::monitor_caps(xc_interface*, uint32_t domid, uint32_t* caps) {
  return control("xc_monitor_get_capabilities", domid, false, [&](domain_state&) {
    *caps = (1u << (XEN_DOMCTL_MONITOR_EVENT_VMEXIT + 1)) - 1;
    if (!f().mtf)
      *caps &= ~(1u << XEN_DOMCTL_MONITOR_EVENT_SINGLESTEP);
    return 0;
  });
}

int fake_xen::impl::maximum_gpfn(xc_interface*, uint32_t domid, xen_pfn_t* gpfns) {
  return control("xc_domain_maximum_gpfn", domid, false, [&](domain_state& d) {
    *gpfns = d.dom->info().max_gfn;
    return 0;
  });
}

int fake_xen::impl::pause(xc_interface*, uint32_t domid) {
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

int fake_xen::impl::unpause(xc_interface*, uint32_t domid) {
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

void* fake_xen::impl::monitor_enable(xc_interface*, uint32_t domid, uint32_t* port) {
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
    if (auto err =
          d.dom->start_events(s, [fake, dp](const drv::event& ev) { fake->raise(*dp, ev); }))
      return errno_of(err);
    return 0;
  });
  return rc == 0 ? page : nullptr;
}

int fake_xen::impl::monitor_disable(xc_interface*, uint32_t domid) {
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
      f().violations_.push_back("xc_monitor_disable(" + std::to_string(d.id) +
                                "): " + std::to_string(stranded) +
                                " VCPUs still wait for an answer and stay paused");
    return 0;
  });
}

int fake_xen::impl::monitor_singlestep(xc_interface*, uint32_t domid, bool enable) {
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

int fake_xen::impl::param_get(xc_interface*, uint32_t domid, uint32_t param, uint64_t* value) {
  return control("xc_hvm_param_get", domid, false, [&](domain_state& d) {
    std::lock_guard g{f().mutex_};
    *value = param == HVM_PARAM_ALTP2M ? d.altp2m_param : 0;
    return 0;
  });
}

int fake_xen::impl::param_set(xc_interface*, uint32_t domid, uint32_t param, uint64_t value) {
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

int fake_xen::impl::altp2m_get_state(xc_interface*, uint32_t domid, bool* state) {
  return control("xc_altp2m_get_domain_state", domid, false, [&](domain_state& d) {
    if (int err = altp2m_ready(d, false))
      return err;
    std::lock_guard g{f().mutex_};
    *state = d.altp2m_active;
    return 0;
  });
}

int fake_xen::impl::altp2m_set_state(xc_interface*, uint32_t domid, bool state) {
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

int fake_xen::impl::create_view(xc_interface*, uint32_t domid, xenmem_access_t access,
                                uint16_t* view) {
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

int fake_xen::impl::destroy_view(xc_interface*, uint32_t domid, uint16_t view) {
  return control("xc_altp2m_destroy_view", domid, false, [&](domain_state& d) {
    if (int err = altp2m_ready(d, true))
      return err;
    // p2m_destroy_altp2m_by_id: view 0, an absent view and a view in use are all EBUSY.
    return d.dom->destroy_view(session(d), view) ? EBUSY : 0;
  });
}

int fake_xen::impl::switch_view(xc_interface*, uint32_t domid, uint16_t view) {
  return control("xc_altp2m_switch_to_view", domid, false, [&](domain_state& d) {
    if (int err = altp2m_ready(d, true))
      return err;
    return d.dom->switch_all(session(d), view) ? EINVAL : 0;
  });
}

int fake_xen::impl::set_access_multi(xc_interface*, uint32_t domid, uint16_t view, uint8_t* access,
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

int fake_xen::impl::get_access_in(domain_state& d, uint16_t view, uint64_t gfn,
                                  xenmem_access_t* out) {
  drv::gfn_t g = gfn;
  drv::page_access a{};
  if (auto err = d.dom->get_access(session(d), view, {&g, 1}, {&a, 1}))
    return errno_of(err);
  *out = xenmem_access_t(a);
  return 0;
}

int fake_xen::impl::altp2m_get_access(xc_interface*, uint32_t domid, uint16_t view, xen_pfn_t gfn,
                                      xenmem_access_t* out) {
  return control("xc_altp2m_get_mem_access", domid, false, [&](domain_state& d) {
    if (int err = altp2m_ready(d, true))
      return err;
    return get_access_in(d, view, gfn, out);
  });
}

int fake_xen::impl::get_access(xc_interface*, uint32_t domid, uint64_t gfn, xenmem_access_t* out) {
  return control("xc_get_mem_access", domid, false,
                 [&](domain_state& d) { return get_access_in(d, 0, gfn, out); });
}

int fake_xen::impl::debug_control(xc_interface*, uint32_t domid, uint32_t op, uint32_t vcpu) {
  return control("xc_domain_debug_control", domid, false, [&](domain_state& d) {
    if (vcpu >= d.dom->info().vcpus)
      return EINVAL;
    if (op != XEN_DOMCTL_DEBUG_OP_SINGLE_STEP_ON && op != XEN_DOMCTL_DEBUG_OP_SINGLE_STEP_OFF)
      return EINVAL;
    auto err = d.dom->set_singlestep(session(d), vcpu, op == XEN_DOMCTL_DEBUG_OP_SINGLE_STEP_ON);
    return err ? errno_of(err) : 0;
  });
}

// Xen 4.17 hvm_save_one: a per-VCPU record with an instance past the last VCPU is ENOENT; a
// buffer smaller than the record is ENOSPC. The domain need not be paused.
int fake_xen::impl::hvm_getcontext_partial(xc_interface*, uint32_t domid, uint16_t type,
                                           uint16_t instance, void* ctx, uint32_t size) {
  return control("xc_domain_hvm_getcontext_partial", domid, false, [&](domain_state& d) {
    if (type != HVM_SAVE_CODE(CPU))
      return EINVAL;
    if (instance >= d.dom->info().vcpus)
      return ENOENT;
    if (size < sizeof(hvm_hw_cpu))
      return ENOSPC;
    auto regs = d.dom->vcpu_registers(session(d), instance);
    if (!regs)
      return errno_of(regs.error()) ? errno_of(regs.error()) : ESRCH;
    hvm_hw_cpu cpu{};
    xen::to_hvm_cpu(*regs, cpu);
    std::memcpy(ctx, &cpu, sizeof cpu);
    return 0;
  });
}

}  // namespace vmitap::testing
