#pragma once

// A fake Xen 4.17 over the simulated hypervisor, behind the Xen driver's seam: Xen's side of
// a real 4 KiB vm_event ring driven with Xen's own RING_* macros (8 slots; the rest wait, as
// on Xen's waitqueue), an event channel with the Linux evtchn driver's mask/pending semantics
// on an eventfd, vm_event_resume's response semantics applied synchronously at the notify,
// foreign memory copied from the sim's, xenstore watches on a pipe, and Xen's errno values.
// Control calls are recorded; any call can be made to fail. What Xen would not let pass
// (a response without VCPU_PAUSED, registers changed behind the driver's back, a VCPU left
// waiting at xc_monitor_disable, an unpause nobody paused for) is listed in violations().
//
// The seam is a table of plain function pointers, so one fake is current at a time.

#include "drivers/sim/hypervisor.hpp"
#include "drivers/xen/xen_api.hpp"

#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace vmitap::testing {

class fake_xen {
public:
  explicit fake_xen(std::shared_ptr<sim::hypervisor> hv);
  ~fake_xen();
  fake_xen(const fake_xen&) = delete;
  fake_xen& operator=(const fake_xen&) = delete;

  /// The seam, routed to this fake.
  const xen::xen_api& api() const;

  // --- what the host is (set before the driver opens) -----------------------------------
  bool present = true;  ///< false: no /dev/xen/privcmd (xc_interface_open: ENOENT)
  int major = 4, minor = 17;
  std::string extraversion = ".4";
  int vm_event_version = VM_EVENT_INTERFACE_VERSION;
  bool mtf = true;                              ///< singlestep events available (Intel VT-x)
  bool altp2m_supported = true;                 ///< Xen booted with altp2m=1
  uint64_t altp2m_param = XEN_ALTP2M_external;  ///< HVM_PARAM_ALTP2M of new domains
  RING_IDX first_index = 0;                     ///< where ring indices start (near 2^32: they wrap)

  /// The next `count` calls of `call` fail with `err` and do nothing.
  void fail_next(const std::string& call, int err, int count = 1);

  // --- what happened --------------------------------------------------------------------
  /// Control calls in order, as "name(domid)" (the ring's hot calls are only counted).
  std::vector<std::string> calls() const;
  void clear_calls();
  uint64_t notifies() const;
  uint64_t responses_dropped() const;  ///< bad version or VCPU id: Xen drops them
  uint64_t responses_ignored() const;  ///< for VCPUs vm_event had not paused
  uint64_t max_in_flight() const;      ///< most requests ever in the ring at once
  uint64_t waitqueue_peak() const;     ///< most requests ever waiting for a slot
  std::vector<std::string> violations() const;
  bool altp2m_on(drv::domain_id id) const;
  bool singlestep_monitor_on(drv::domain_id id) const;
  bool monitor_enabled(drv::domain_id id) const;
  uint32_t controller_pauses(drv::domain_id id) const;

  struct impl;  // the seam's functions (static: the table holds plain function pointers)

private:
  friend struct impl;
  struct domain_state;
  struct evtchn;
  struct xs;

  domain_state* state_of(uint32_t domid);  // the domain Xen knows; null if none (mutex_ held)
  int failing(const char* call);           // the injected errno for `call`, or 0 (mutex_ held)
  void violation(std::string what);
  void raise(domain_state& d, const drv::event& ev);
  void put_locked(domain_state& d, const vm_event_request_t& req);  // ring_mutex held
  void resume(domain_state& d);
  void apply(domain_state& d, const vm_event_response_t& rsp, const vm_event_request_t& req);
  void fire(domain_state& d);
  void fire(evtchn& e, evtchn_port_t port);
  void watch_event(bool started);
  void release_if_idle(domain_state& d);  // mutex_ not held

  std::shared_ptr<sim::hypervisor> hv_;
  uint64_t watch_token_ = 0;
  mutable std::mutex mutex_;  // everything below; never held while calling into the sim
  std::map<uint32_t, std::unique_ptr<domain_state>> domains_;
  std::set<evtchn*> evtchns_;
  std::set<xs*> xs_handles_;
  std::map<std::string, std::pair<int, int>> failures_;  // call → (errno, count)
  std::vector<std::string> calls_;
  std::vector<std::string> violations_;
  uint64_t notifies_ = 0, dropped_ = 0, ignored_ = 0, max_in_flight_ = 0, waitqueue_peak_ = 0;
};

}  // namespace vmitap::testing
