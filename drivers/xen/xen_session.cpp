#include "drivers/xen/xen_session.hpp"

#include "drivers/error.hpp"
#include "drivers/xen/codec.hpp"

#include <sys/mman.h>
#include <cerrno>
#include <thread>

namespace vmitap::xen {

namespace {

constexpr size_t max_mapped_pages = 1024;  // foreign mappings kept for reads

}  // namespace

caf::error xen_session::check() const {
  if (detached_)
    return make_error(ec::not_attached,
                      "domain " + std::to_string(id_) + ": the session has ended");
  return {};
}

caf::error xen_session::not_ram_or_gone(const char* call, int err, drv::gfn_t gfn) const {
  // Xen says ESRCH (EFAULT for a mapping) both for a gfn outside guest RAM and for a domain
  // that is gone: only the domain's state tells a death from a bad address.
  auto e = fail(call, err);
  if (domain_gone(e) || (err != ESRCH && err != EFAULT))
    return e;
  return make_error(ec::gfn_out_of_range, "gfn " + std::to_string(gfn) + " is not guest RAM");
}

caf::expected<drv::view_id> xen_session::create_view(drv::page_access default_access) {
  std::lock_guard g{mutex_};
  if (auto err = check())
    return err;
  uint16_t view = 0;
  if (api_.xc_altp2m_create_view(host_->xch, id_, xenmem_access_t(default_access), &view) != 0) {
    if (errno == EINVAL)
      return make_error(ec::no_such_view, "xc_altp2m_create_view: all 9 views of domain " +
                                            std::to_string(id_) + " are in use");
    return fail("xc_altp2m_create_view", errno);
  }
  views_.push_back(view);
  return view;
}

caf::error xen_session::destroy_view(drv::view_id view) {
  std::lock_guard g{mutex_};
  if (auto err = check())
    return err;
  if (api_.xc_altp2m_destroy_view(host_->xch, id_, view) != 0) {
    if (errno == EBUSY)
      return make_error(ec::view_in_use, "xc_altp2m_destroy_view: view " + std::to_string(view) +
                                           " is in use (or view 0, or absent)");
    return fail("xc_altp2m_destroy_view", errno);
  }
  std::erase(views_, view);
  return {};
}

caf::error xen_session::switch_all(drv::view_id view) {
  std::lock_guard g{mutex_};
  if (auto err = check())
    return err;
  if (api_.xc_altp2m_switch_to_view(host_->xch, id_, view) != 0)
    return fail("xc_altp2m_switch_to_view", errno);
  return {};
}

caf::error xen_session::get_access(drv::view_id view, std::span<const drv::gfn_t> gfns,
                                   std::span<drv::page_access> out) {
  std::lock_guard g{mutex_};
  if (auto err = check())
    return err;
  // Xen 4.17 has no batched read: one hypercall per gfn. An entry not yet copied into a view
  // (ESRCH) has the host's access, which it would be copied with.
  for (size_t i = 0; i < gfns.size(); ++i) {
    xenmem_access_t a{};
    if (api_.xc_altp2m_get_mem_access(host_->xch, id_, view, gfns[i], &a) != 0) {
      if (errno != ESRCH || view == 0)
        return fail("xc_altp2m_get_mem_access", errno);
      if (api_.xc_get_mem_access(host_->xch, id_, gfns[i], &a) != 0)
        return not_ram_or_gone("xc_get_mem_access", errno, gfns[i]);
    }
    out[i] = drv::page_access(uint8_t(a) & 7);
  }
  return {};
}

caf::error xen_session::set_access(drv::view_id view, std::span<const drv::access_change> changes) {
  std::lock_guard g{mutex_};
  if (auto err = check())
    return err;
  std::vector<uint8_t> access(changes.size());
  std::vector<uint64_t> gfns(changes.size());
  for (size_t i = 0; i < changes.size(); ++i) {
    access[i] = uint8_t(changes[i].value);
    gfns[i] = changes[i].gfn;
  }
  // One call for the batch (Xen preempts itself every 64 entries); on failure exactly a
  // prefix is applied and the caller reads back.
  if (api_.xc_altp2m_set_mem_access_multi(host_->xch, id_, view, access.data(), gfns.data(),
                                          uint32_t(changes.size())) != 0)
    return fail("xc_altp2m_set_mem_access_multi", errno);
  return {};
}

caf::error xen_session::set_singlestep(drv::vcpu_id vcpu, bool on) {
  std::lock_guard g{mutex_};
  if (auto err = check())
    return err;
  if (api_.xc_domain_debug_control(
        host_->xch, id_,
        on ? XEN_DOMCTL_DEBUG_OP_SINGLE_STEP_ON : XEN_DOMCTL_DEBUG_OP_SINGLE_STEP_OFF, vcpu) != 0)
    return fail("xc_domain_debug_control", errno);
  ring_->set_singlestepping(vcpu, on);
  return {};
}

caf::expected<drv::registers> xen_session::vcpu_registers(drv::vcpu_id vcpu) {
  std::lock_guard g{mutex_};
  if (auto err = check())
    return err;
  if (vcpu >= info_.vcpus)
    return make_error(ec::no_such_vcpu, "vcpu_registers: VCPU " + std::to_string(vcpu));
  hvm_hw_cpu cpu{};
  if (api_.xc_domain_hvm_getcontext_partial(host_->xch, id_, HVM_SAVE_CODE(CPU), uint16_t(vcpu),
                                            &cpu, sizeof cpu) != 0)
    return fail("xc_domain_hvm_getcontext_partial", errno);
  return from_hvm_cpu(cpu);
}

caf::expected<drv::event_ring*> xen_session::start_events() {
  if (auto err = check())
    return err;
  return ring_.get();  // the ring has been live since attach; the poller drains it from now
}

caf::expected<const std::byte*> xen_session::page(drv::gfn_t gfn) {
  if (auto i = mapped_.find(gfn); i != mapped_.end())
    return static_cast<const std::byte*>(i->second);
  if (mapped_.size() >= max_mapped_pages) {
    auto victim = mapped_.begin();  // a cache, not a record: any page may go
    api_.xenforeignmemory_unmap(xfm_, victim->second, 1);
    mapped_.erase(victim);
  }
  xen_pfn_t pfn = gfn;
  int err = 0;
  void* p = api_.xenforeignmemory_map(xfm_, id_, PROT_READ, 1, &pfn, &err);
  if (!p || err != 0) {
    int e = p ? err : errno;
    if (p)
      api_.xenforeignmemory_unmap(xfm_, p, 1);
    return not_ram_or_gone("xenforeignmemory_map", e < 0 ? -e : e, gfn);
  }
  mapped_[gfn] = p;
  return static_cast<const std::byte*>(p);
}

caf::error xen_session::read_physical(uint64_t pa, std::span<std::byte> out) {
  // Checked under memory_mutex_: detach sets detached_ before it closes the handle under it.
  std::lock_guard g{memory_mutex_};
  if (auto err = check())
    return err;
  size_t done = 0;
  while (done < out.size()) {
    auto at = pa + done;
    auto p = page(drv::gfn_of(at));
    if (!p)
      return std::move(p.error());
    auto n = std::min<size_t>(out.size() - done, drv::page_size - (at & drv::page_mask));
    std::memcpy(out.data() + done, *p + (at & drv::page_mask), n);
    done += n;
  }
  return {};
}

void xen_session::close_memory() {
  std::lock_guard g{memory_mutex_};
  for (auto& [gfn, p] : mapped_)
    api_.xenforeignmemory_unmap(xfm_, p, 1);
  mapped_.clear();
  api_.xenforeignmemory_close(xfm_);
  xfm_ = nullptr;
}

int xen_session::disable_monitor() {
  int rc = api_.xc_monitor_disable(host_->xch, id_);
  for (int tries = 0; rc != 0 && errno == EBUSY && tries < 100; ++tries) {
    // VCPUs sleep in Xen until a ring slot frees: answer what the freed slots let in (and
    // any answer whose notify failed), then try again.
    if (ring_->answer_leftovers() == 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    rc = api_.xc_monitor_disable(host_->xch, id_);
  }
  return rc;
}

caf::error xen_session::pause() {
  std::lock_guard g{mutex_};
  if (auto err = check())
    return err;
  // Synchronous: when it returns no VCPU runs, and every request raised is in the ring.
  if (api_.xc_domain_pause(host_->xch, id_) != 0)
    return fail("xc_domain_pause", errno);
  ++pauses_;
  return {};
}

caf::error xen_session::resume() {
  std::lock_guard g{mutex_};
  if (auto err = check())
    return err;
  if (pauses_ == 0)
    return {};
  --pauses_;
  if (api_.xc_domain_unpause(host_->xch, id_) != 0)
    return fail("xc_domain_unpause", errno);
  return {};
}

}  // namespace vmitap::xen
