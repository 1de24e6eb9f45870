#pragma once

// A domain's vm_event ring as its poller sees it: Xen's shared 4 KiB page (8 slots) read and
// written with Xen's own RING_* macros, and the event channel the poller sleeps on. One
// poller owns it; responses are written in any order with one notify per batch.

#include "drivers/driver.hpp"
#include "drivers/xen/xen_api.hpp"

#include <atomic>
#include <chrono>
#include <vector>

namespace vmitap::xen {

class xen_ring final : public drv::event_ring {
public:
  /// Takes over the shared ring Xen initialized in `page`, at the indices Xen left (0 after
  /// xc_monitor_enable; a fake Xen starts near 2^32 to see them wrap).
  xen_ring(const xen_api& api, xenevtchn_handle* xce, evtchn_port_t port, void* page,
           uint32_t vcpus);

  size_t take(std::span<drv::event> out) override;
  drv::give_result give(std::span<const drv::response> rsps) override;
  int fd() const override { return fd_; }
  drv::arm_result arm() override;
  void acknowledge() override;
  caf::error retry_owed() override;

  /// Answers every request left in the ring (teardown), after sending a notify still owed:
  /// back to view 0, singlestep off where vmitap turned it on. Returns how many.
  size_t answer_leftovers();
  /// While answers are in the ring that Xen was not told of: why the last notify failed.
  caf::error owed_error() const { return owed_ > 0 ? last_refusal_ : caf::error{}; }
  /// Whether vmitap's responses left the VCPU singlestepping (TOGGLE flips it).
  bool singlestepping(drv::vcpu_id vcpu) const;
  void set_singlestepping(drv::vcpu_id vcpu, bool on);

private:
  using clock = std::chrono::steady_clock;
  /// Tells Xen of every answer owed; on failure schedules the next try with backoff.
  caf::error notify();
  /// Retries an owed notify with its backoff until it succeeds or the streak is long
  /// (teardown: the VCPUs those answers free may be what a later call waits for).
  void flush();
  void track(const drv::response& rsp);

  const xen_api& api_;
  xenevtchn_handle* xce_;
  evtchn_port_t port_;
  vm_event_back_ring_t back_;
  int fd_;
  std::vector<uint8_t> singlestep_;  // per VCPU, as vmitap's responses left it
  size_t owed_ = 0;                  // answers in the ring Xen was not told of
  uint32_t streak_ = 0;              // notifies failed in a row
  clock::time_point retry_at_{};     // when an owed notify is tried again
  caf::error last_refusal_;
};

}  // namespace vmitap::xen
