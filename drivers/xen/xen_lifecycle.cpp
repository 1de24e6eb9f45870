// A Xen session's lifecycle: attach in the documented order (docs/DESIGN.md §9), each step
// undone in reverse when a later one fails, and the ordered teardown, which works on a dying
// or dead domain too. The operations in between are in xen_session.cpp.

#include "drivers/xen/xen_session.hpp"

#include "drivers/error.hpp"

#include <cerrno>

namespace vmitap::xen {

xen_session::xen_session(std::shared_ptr<xen_host> host, drv::domain_id id, uint64_t serial) :
  host_(std::move(host)), api_(host_->api), id_(id), serial_(serial) {}

caf::expected<std::unique_ptr<xen_session>> xen_session::attach(std::shared_ptr<xen_host> host,
                                                                drv::domain_id id) {
  uint64_t serial;
  {
    std::lock_guard g{host->mutex};
    if (host->attached.count(id))
      return make_error(ec::already_attached,
                        "domain " + std::to_string(id) + " is already monitored by this vmitap");
    serial = host->next_serial++;
    host->attached[id] = serial;
  }
  std::unique_ptr<xen_session> s{new xen_session(host, id, serial)};
  s->undo_.push_back([host, id] {
    std::lock_guard g{host->mutex};
    host->attached.erase(id);
  });
  // Each step registers its own undo once it has done something; a failure at step k
  // undoes steps k-1 … 1 in reverse.
  using step = caf::error (xen_session::*)();
  for (step next : {&xen_session::check_domain, &xen_session::check_interface,
                    &xen_session::read_memory_size, &xen_session::pause_for_attach,
                    &xen_session::open_handles, &xen_session::enable_monitor_ring,
                    &xen_session::bind_event_channel, &xen_session::enable_altp2m,
                    &xen_session::enable_singlestep_events, &xen_session::unpause_after_attach}) {
    if (auto err = (s.get()->*next)()) {
      for (auto i = s->undo_.rbegin(); i != s->undo_.rend(); ++i)
        (*i)();
      s->undo_.clear();
      s->detached_ = true;
      return err;
    }
  }
  s->undo_.clear();  // attached: from here on, detach() tears down
  return s;
}

// 1. The domain: HVM with hardware-assisted paging.
caf::error xen_session::check_domain() {
  auto d = host_->domain(id_);
  if (!d)
    return make_error(ec::no_such_domain,
                      "xc_domain_getinfolist: no domain " + std::to_string(id_));
  if (d->flags & (XEN_DOMINF_dying | XEN_DOMINF_shutdown))
    return make_error(ec::domain_dead, "domain " + std::to_string(id_) + " is shutting down");
  if (!(d->flags & XEN_DOMINF_hvm_guest) || !(d->flags & XEN_DOMINF_hap))
    return make_error(ec::incompatible_hypervisor,
                      "domain " + std::to_string(id_) +
                        " is not an HVM/PVH guest with hardware-assisted paging: altp2m needs "
                        "both");
  info_ = host_->info_of(*d);
  return {};
}

// 2. The interface version; 3. capabilities: singlestep events need MTF (Intel VT-x).
caf::error xen_session::check_interface() {
  auto* xch = host_->xch;
  if (auto v = api_.xc_vm_event_get_version(xch); v != VM_EVENT_INTERFACE_VERSION)
    return make_error(ec::incompatible_hypervisor,
                      "xc_vm_event_get_version: Xen speaks vm_event version " + std::to_string(v) +
                        ", vmitap version " + std::to_string(VM_EVENT_INTERFACE_VERSION));
  uint32_t caps = 0;
  if (api_.xc_monitor_get_capabilities(xch, id_, &caps) != 0)
    return fail("xc_monitor_get_capabilities", errno);
  if (!(caps & (1u << XEN_DOMCTL_MONITOR_EVENT_SINGLESTEP)))
    return make_error(ec::incompatible_hypervisor,
                      "xc_monitor_get_capabilities: no singlestep events (Intel VT-x MTF)");
  return {};
}

// 4. Memory size.
caf::error xen_session::read_memory_size() {
  xen_pfn_t max_gpfn = 0;
  if (api_.xc_domain_maximum_gpfn(host_->xch, id_, &max_gpfn) != 0)
    return fail("xc_domain_maximum_gpfn", errno);
  info_.max_gfn = max_gpfn;
  return {};
}

// 5. Pause: no request can come before the ring is ours.
caf::error xen_session::pause_for_attach() {
  if (api_.xc_domain_pause(host_->xch, id_) != 0)
    return fail("xc_domain_pause", errno);
  undo_.push_back([this] { api_.xc_domain_unpause(host_->xch, id_); });
  return {};
}

// Handles of this session: events (one poller per handle) and guest memory.
caf::error xen_session::open_handles() {
  xce_ = api_.xenevtchn_open(host_->logger, 0);
  if (!xce_)
    return make_error(ec::driver_call_failed, "xenevtchn_open", errno);
  undo_.push_back([this] {
    api_.xenevtchn_close(xce_);
    xce_ = nullptr;
  });
  xfm_ = api_.xenforeignmemory_open(host_->logger, 0);
  if (!xfm_)
    return make_error(ec::driver_call_failed, "xenforeignmemory_open", errno);
  undo_.push_back([this] {
    api_.xenforeignmemory_close(xfm_);
    xfm_ = nullptr;
  });
  return {};
}

// 6. The monitor ring.
caf::error xen_session::enable_monitor_ring() {
  ring_page_ = api_.xc_monitor_enable(host_->xch, id_, &remote_port_);
  if (!ring_page_) {
    int err = errno;
    if (err == EBUSY)
      return make_error(
        ec::another_monitor,
        "xc_monitor_enable: another monitor (xen-access, DRAKVUF, LibVMI, or a crashed vmitap) "
        "is attached to domain " +
          std::to_string(id_) + "; if nothing runs, `xen-access " + std::to_string(id_) +
          " ...` or a tool calling xc_monitor_disable clears it (VCPUs with an unanswered "
          "request stay paused until then)");
    return fail("xc_monitor_enable", err);
  }
  undo_.push_back([this] {
    api_.xc_monitor_disable(host_->xch, id_);
    api_.unmap_ring(ring_page_, XC_PAGE_SIZE);
    ring_page_ = nullptr;
  });
  return {};
}

// 7. The event channel; 8. ring init (ours: Xen's side is ready since enable).
caf::error xen_session::bind_event_channel() {
  auto local = api_.xenevtchn_bind_interdomain(xce_, id_, remote_port_);
  if (local < 0)
    return fail("xenevtchn_bind_interdomain", errno);
  local_port_ = evtchn_port_t(local);
  undo_.push_back([this] { api_.xenevtchn_unbind(xce_, local_port_); });
  ring_ = std::make_unique<xen_ring>(api_, xce_, local_port_, ring_page_, info_.vcpus);
  return {};
}

// 9. altp2m: external mode if unset, then on; remember whether vmitap turned it on.
caf::error xen_session::enable_altp2m() {
  auto* xch = host_->xch;
  uint64_t mode = 0;
  if (api_.xc_hvm_param_get(xch, id_, HVM_PARAM_ALTP2M, &mode) != 0)
    return fail("xc_hvm_param_get(HVM_PARAM_ALTP2M)", errno);
  if (mode == XEN_ALTP2M_disabled &&
      api_.xc_hvm_param_set(xch, id_, HVM_PARAM_ALTP2M, XEN_ALTP2M_external) != 0 &&
      errno != EEXIST)
    return fail("xc_hvm_param_set(HVM_PARAM_ALTP2M, external)", errno);
  auto altp2m_error = [this](const char* call, int err) {
    if (err == EOPNOTSUPP)
      return make_error(ec::incompatible_hypervisor,
                        std::string(call) +
                          ": altp2m is not available (boot Xen with altp2m=1 on "
                          "an Intel CPU with EPT; the guest needs altp2m = \"external\")");
    return fail(call, err);
  };
  bool active = false;
  if (api_.xc_altp2m_get_domain_state(xch, id_, &active) != 0)
    return altp2m_error("xc_altp2m_get_domain_state", errno);
  if (!active) {
    if (api_.xc_altp2m_set_domain_state(xch, id_, true) != 0)
      return altp2m_error("xc_altp2m_set_domain_state", errno);
    altp2m_enabled_by_us_ = true;
    undo_.push_back([this] { api_.xc_altp2m_set_domain_state(host_->xch, id_, false); });
  }
  return {};
}

// 10. Singlestep events (fast singlestep needs them too on 4.17).
caf::error xen_session::enable_singlestep_events() {
  if (api_.xc_monitor_singlestep(host_->xch, id_, true) == 0) {
    singlestep_monitor_by_us_ = true;
    undo_.push_back([this] { api_.xc_monitor_singlestep(host_->xch, id_, false); });
  } else if (errno != EEXIST) {
    return fail("xc_monitor_singlestep", errno);
  }
  return {};
}

// 11. Views are created by the caller. 12. Unpause (on failure the undo tries once more).
caf::error xen_session::unpause_after_attach() {
  if (api_.xc_domain_unpause(host_->xch, id_) != 0)
    return fail("xc_domain_unpause", errno);
  return {};
}

xen_session::~xen_session() {
  detach();
}

caf::error xen_session::detach() {
  std::vector<drv::view_id> views;
  uint32_t pauses;
  {
    // Operations hold mutex_ throughout: once detached_ is set under it, none is running
    // and none will start.
    std::lock_guard g{mutex_};
    if (detached_)
      return {};
    detached_ = true;
    views.swap(views_);
    pauses = std::exchange(pauses_, 0);
  }
  auto& api = api_;
  auto* xch = host_->xch;
  caf::error first;
  auto note = [&](const char* call, int rc) {
    if (rc != 0 && !first)
      first = fail(call, errno);
  };
  auto d = host_->domain(id_);
  bool alive = d && !(d->flags & XEN_DOMINF_dying);
  if (alive) {
    // 2. Pause (once more: the session's own pauses are undone at the end).
    note("xc_domain_pause", api.xc_domain_pause(xch, id_));
    // 3. Answer what is left: back to view 0, singlestep off where we turned it on.
    ring_->answer_leftovers();
    // 4. All VCPUs to view 0; 5. destroy our views.
    note("xc_altp2m_switch_to_view", api.xc_altp2m_switch_to_view(xch, id_, 0));
    for (auto view : views)
      note("xc_altp2m_destroy_view", api.xc_altp2m_destroy_view(xch, id_, view));
    // 6. altp2m off, if vmitap turned it on.
    if (altp2m_enabled_by_us_)
      note("xc_altp2m_set_domain_state", api.xc_altp2m_set_domain_state(xch, id_, false));
    // 7. Singlestep off on every VCPU: left on, it blocks interrupts and hangs the guest.
    for (uint32_t v = 0; v < info_.vcpus; ++v)
      note("xc_domain_debug_control",
           api.xc_domain_debug_control(xch, id_, XEN_DOMCTL_DEBUG_OP_SINGLE_STEP_OFF, v));
    // 8. Singlestep events off (EEXIST: off already).
    if (singlestep_monitor_by_us_ && api.xc_monitor_singlestep(xch, id_, false) != 0 &&
        errno != EEXIST)
      note("xc_monitor_singlestep", -1);
    // 9. Drain again.
    ring_->answer_leftovers();
    // 11 before 10: disable the monitor while the ring is still mapped, since EBUSY (VCPUs
    // waiting for ring space) is cured only by answering the ring.
    note("xc_monitor_disable", disable_monitor());
    // Answers Xen never heard of leave their VCPUs paused: the detach says so.
    if (auto err = ring_->owed_error(); err && !first)
      first = std::move(err);
  }
  // 10. Unmap the ring.
  if (ring_page_) {
    api.unmap_ring(ring_page_, XC_PAGE_SIZE);
    ring_page_ = nullptr;
  }
  // 12. Unbind, unpause (ours and the session's), close.
  api.xenevtchn_unbind(xce_, local_port_);
  if (alive)
    for (uint32_t i = 0; i < pauses + 1; ++i)
      note("xc_domain_unpause", api.xc_domain_unpause(xch, id_));
  close_memory();
  api.xenevtchn_close(xce_);
  xce_ = nullptr;
  {
    std::lock_guard g{host_->mutex};
    if (auto i = host_->attached.find(id_); i != host_->attached.end() && i->second == serial_)
      host_->attached.erase(i);
  }
  if (first && code_of(first) == ec::domain_dead)
    return {};  // it died while we tore down: nothing is left to restore
  return first;
}

}  // namespace vmitap::xen
