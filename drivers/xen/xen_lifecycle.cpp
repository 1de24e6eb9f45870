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
  auto& api = host->api;
  auto* xch = host->xch;
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
  auto failed = [&](caf::error err) -> caf::expected<std::unique_ptr<xen_session>> {
    for (auto i = s->undo_.rbegin(); i != s->undo_.rend(); ++i)
      (*i)();  // a failure at step k undoes steps k-1 … 1
    s->undo_.clear();
    s->detached_ = true;
    return err;
  };
  s->undo_.push_back([host, id] {
    std::lock_guard g{host->mutex};
    host->attached.erase(id);
  });
  // 1. The domain: HVM with hardware-assisted paging.
  auto d = host->domain(id);
  if (!d)
    return failed(
      make_error(ec::no_such_domain, "xc_domain_getinfolist: no domain " + std::to_string(id)));
  if (d->flags & (XEN_DOMINF_dying | XEN_DOMINF_shutdown))
    return failed(
      make_error(ec::domain_dead, "domain " + std::to_string(id) + " is shutting down"));
  if (!(d->flags & XEN_DOMINF_hvm_guest) || !(d->flags & XEN_DOMINF_hap))
    return failed(
      make_error(ec::incompatible_hypervisor, "domain " + std::to_string(id) +
                                                " is not an HVM/PVH guest with "
                                                "hardware-assisted paging: altp2m needs both"));
  s->info_ = host->info_of(*d);
  // 2. The interface version.
  if (auto v = api.xc_vm_event_get_version(xch); v != VM_EVENT_INTERFACE_VERSION)
    return failed(make_error(ec::incompatible_hypervisor,
                             "xc_vm_event_get_version: Xen speaks vm_event version " +
                               std::to_string(v) + ", vmitap version " +
                               std::to_string(VM_EVENT_INTERFACE_VERSION)));
  // 3. Capabilities: singlestep events need MTF (Intel VT-x).
  uint32_t caps = 0;
  if (api.xc_monitor_get_capabilities(xch, id, &caps) != 0)
    return failed(s->fail("xc_monitor_get_capabilities", errno));
  if (!(caps & (1u << XEN_DOMCTL_MONITOR_EVENT_SINGLESTEP)))
    return failed(make_error(ec::incompatible_hypervisor,
                             "xc_monitor_get_capabilities: no singlestep events (Intel VT-x MTF)"));
  // 4. Memory size.
  xen_pfn_t max_gpfn = 0;
  if (api.xc_domain_maximum_gpfn(xch, id, &max_gpfn) != 0)
    return failed(s->fail("xc_domain_maximum_gpfn", errno));
  s->info_.max_gfn = max_gpfn;
  // 5. Pause: no request can come before the ring is ours.
  if (api.xc_domain_pause(xch, id) != 0)
    return failed(s->fail("xc_domain_pause", errno));
  s->undo_.push_back([&api, xch, id] { api.xc_domain_unpause(xch, id); });
  // Handles of this session: events (one poller per handle) and guest memory.
  s->xce_ = api.xenevtchn_open(host->logger, 0);
  if (!s->xce_)
    return failed(make_error(ec::driver_call_failed, "xenevtchn_open", errno));
  s->undo_.push_back([sp = s.get()] {
    sp->api_.xenevtchn_close(sp->xce_);
    sp->xce_ = nullptr;
  });
  s->xfm_ = api.xenforeignmemory_open(host->logger, 0);
  if (!s->xfm_)
    return failed(make_error(ec::driver_call_failed, "xenforeignmemory_open", errno));
  s->undo_.push_back([sp = s.get()] {
    sp->api_.xenforeignmemory_close(sp->xfm_);
    sp->xfm_ = nullptr;
  });
  // 6. The monitor ring.
  uint32_t remote_port = 0;
  s->ring_page_ = api.xc_monitor_enable(xch, id, &remote_port);
  if (!s->ring_page_) {
    int err = errno;
    if (err == EBUSY)
      return failed(make_error(
        ec::another_monitor,
        "xc_monitor_enable: another monitor (xen-access, DRAKVUF, LibVMI, or a crashed vmitap) "
        "is attached to domain " +
          std::to_string(id) + "; if nothing runs, `xen-access " + std::to_string(id) +
          " ...` or a tool calling xc_monitor_disable clears it (VCPUs with an unanswered request "
          "stay paused until then)"));
    return failed(s->fail("xc_monitor_enable", err));
  }
  s->undo_.push_back([sp = s.get()] {
    sp->api_.xc_monitor_disable(sp->host_->xch, sp->id_);
    sp->api_.unmap_ring(sp->ring_page_, XC_PAGE_SIZE);
    sp->ring_page_ = nullptr;
  });
  // 7. The event channel.
  auto local = api.xenevtchn_bind_interdomain(s->xce_, id, remote_port);
  if (local < 0)
    return failed(s->fail("xenevtchn_bind_interdomain", errno));
  s->local_port_ = evtchn_port_t(local);
  s->undo_.push_back([sp = s.get()] { sp->api_.xenevtchn_unbind(sp->xce_, sp->local_port_); });
  // 8. Ring init (ours: Xen's side is ready since enable).
  s->ring_ =
    std::make_unique<xen_ring>(api, s->xce_, s->local_port_, s->ring_page_, s->info_.vcpus);
  // 9. altp2m: external mode if unset, then on; remember whether vmitap turned it on.
  uint64_t mode = 0;
  if (api.xc_hvm_param_get(xch, id, HVM_PARAM_ALTP2M, &mode) != 0)
    return failed(s->fail("xc_hvm_param_get(HVM_PARAM_ALTP2M)", errno));
  if (mode == XEN_ALTP2M_disabled &&
      api.xc_hvm_param_set(xch, id, HVM_PARAM_ALTP2M, XEN_ALTP2M_external) != 0 && errno != EEXIST)
    return failed(s->fail("xc_hvm_param_set(HVM_PARAM_ALTP2M, external)", errno));
  auto altp2m_error = [&](const char* call, int err) {
    if (err == EOPNOTSUPP)
      return make_error(ec::incompatible_hypervisor,
                        std::string(call) +
                          ": altp2m is not available (boot Xen with altp2m=1 on "
                          "an Intel CPU with EPT; the guest needs altp2m = \"external\")");
    return s->fail(call, err);
  };
  bool active = false;
  if (api.xc_altp2m_get_domain_state(xch, id, &active) != 0)
    return failed(altp2m_error("xc_altp2m_get_domain_state", errno));
  if (!active) {
    if (api.xc_altp2m_set_domain_state(xch, id, true) != 0)
      return failed(altp2m_error("xc_altp2m_set_domain_state", errno));
    s->altp2m_enabled_by_us_ = true;
    s->undo_.push_back(
      [sp = s.get()] { sp->api_.xc_altp2m_set_domain_state(sp->host_->xch, sp->id_, false); });
  }
  // 10. Singlestep events (fast singlestep needs them too on 4.17).
  if (api.xc_monitor_singlestep(xch, id, true) == 0) {
    s->singlestep_monitor_by_us_ = true;
    s->undo_.push_back(
      [sp = s.get()] { sp->api_.xc_monitor_singlestep(sp->host_->xch, sp->id_, false); });
  } else if (errno != EEXIST) {
    return failed(s->fail("xc_monitor_singlestep", errno));
  }
  // 11. Views are created by the caller. 12. Unpause (on failure the undo tries once more).
  if (api.xc_domain_unpause(xch, id) != 0)
    return failed(s->fail("xc_domain_unpause", errno));
  s->undo_.clear();  // attached: from here on, detach() tears down
  return s;
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
