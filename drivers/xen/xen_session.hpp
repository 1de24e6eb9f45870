#pragma once

// A monitoring session on one Xen domain: attach in the documented order (docs/DESIGN.md §9),
// undoing what was done when a step fails; views and access through altp2m; guest memory
// through cached foreign mappings; and the teardown in the documented order (the monitor is
// disabled before the ring is unmapped, so an EBUSY can be cured by answering the ring),
// which works on a dying or dead domain too.

#include "drivers/xen/xen_host.hpp"
#include "drivers/xen/xen_ring.hpp"

#include <atomic>
#include <functional>
#include <unordered_map>

namespace vmitap::xen {

class xen_session final : public drv::domain_session {
public:
  static caf::expected<std::unique_ptr<xen_session>> attach(std::shared_ptr<xen_host> host,
                                                            drv::domain_id id);
  ~xen_session() override;

  drv::domain_info info() const override { return info_; }
  caf::expected<drv::view_id> create_view(drv::page_access default_access) override;
  caf::error destroy_view(drv::view_id view) override;
  caf::error switch_all(drv::view_id view) override;
  caf::error get_access(drv::view_id view, std::span<const drv::gfn_t> gfns,
                        std::span<drv::page_access> out) override;
  caf::error set_access(drv::view_id view, std::span<const drv::access_change> changes) override;
  caf::error set_singlestep(drv::vcpu_id vcpu, bool on) override;
  caf::expected<drv::event_ring*> start_events() override;
  caf::error read_physical(uint64_t pa, std::span<std::byte> out) override;
  caf::expected<drv::registers> vcpu_registers(drv::vcpu_id vcpu) override;
  caf::error pause() override;
  caf::error resume() override;
  caf::error detach() override;

private:
  xen_session(std::shared_ptr<xen_host> host, drv::domain_id id, uint64_t serial);
  // The attach's steps, in order (xen_lifecycle.cpp): each registers its own undo.
  caf::error check_domain();
  caf::error check_interface();
  caf::error read_memory_size();
  caf::error pause_for_attach();
  caf::error open_handles();
  caf::error enable_monitor_ring();
  caf::error bind_event_channel();
  caf::error enable_altp2m();
  caf::error enable_singlestep_events();
  caf::error unpause_after_attach();
  caf::error fail(const char* call, int err) const { return call_error(*host_, id_, call, err); }
  /// ESRCH/EFAULT from a call on `gfn`: the domain is gone, or the gfn is not guest RAM.
  caf::error not_ram_or_gone(const char* call, int err, drv::gfn_t gfn) const;
  caf::error check() const;
  /// The first mapped address of `gfn`, mapping it if needed (under memory_mutex_).
  caf::expected<const std::byte*> page(drv::gfn_t gfn);
  /// Unmaps every cached page and closes the foreign-memory handle (under memory_mutex_).
  void close_memory();
  /// xc_monitor_disable; EBUSY means VCPUs wait for ring space: answer the ring and retry.
  int disable_monitor();

  std::shared_ptr<xen_host> host_;
  const xen_api& api_;
  drv::domain_id id_;
  uint64_t serial_;
  drv::domain_info info_;
  std::vector<std::function<void()>> undo_;  // the attach's steps, undone in reverse on failure

  xenevtchn_handle* xce_ = nullptr;
  xenforeignmemory_handle* xfm_ = nullptr;
  void* ring_page_ = nullptr;
  uint32_t remote_port_ = 0;  // the ring's event channel, Xen's end
  evtchn_port_t local_port_ = 0;
  std::unique_ptr<xen_ring> ring_;
  bool altp2m_enabled_by_us_ = false;
  bool singlestep_monitor_by_us_ = false;

  // Set once, under mutex_, when detach starts; read without it by check().
  std::atomic<bool> detached_ = false;
  // Held across each control operation (never by the ring's take/give path), so detach,
  // which sets detached_ under it, starts only after the operations already running end and
  // none starts after it.
  std::mutex mutex_;
  std::vector<drv::view_id> views_;
  uint32_t pauses_ = 0;  // xc_domain_pause calls not yet undone
  // Guest reads, and detach closing their handle.
  std::mutex memory_mutex_;
  std::unordered_map<drv::gfn_t, void*> mapped_;
};

}  // namespace vmitap::xen
