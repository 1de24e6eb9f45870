#include "drivers/xen/xen_ring.hpp"

#include "drivers/error.hpp"
#include "drivers/xen/codec.hpp"

#include <cerrno>
#include <cstring>
#include <thread>

namespace vmitap::xen {

xen_ring::xen_ring(const xen_api& api, xenevtchn_handle* xce, evtchn_port_t port, void* page,
                   uint32_t vcpus) :
  api_(api), xce_(xce), port_(port), fd_(api.xenevtchn_fd(xce)), singlestep_(vcpus, 0) {
  auto* sring = static_cast<vm_event_sring_t*>(page);
  // The domain is paused and nothing was answered yet: every request Xen put is unconsumed.
  BACK_RING_ATTACH(&back_, sring, sring->rsp_prod, XC_PAGE_SIZE);
  sring->req_event = back_.req_cons + 1;
}

size_t xen_ring::take(std::span<drv::event> out) {
  size_t n = 0;
  while (n < out.size() && RING_HAS_UNCONSUMED_REQUESTS(&back_)) {
    vm_event_request_t req;
    // Copied out at once: a response written later may reuse the slot.
    RING_COPY_REQUEST(&back_, back_.req_cons, &req);
    ++back_.req_cons;
    back_.sring->req_event = back_.req_cons + 1;
    out[n++] = from_request(req);
  }
  return n;
}

void xen_ring::track(const drv::response& rsp) {
  if (rsp.vcpu >= singlestep_.size())
    return;
  if (rsp.flags & drv::flag::toggle_singlestep)
    singlestep_[rsp.vcpu] ^= 1;
  else if (rsp.flags & drv::flag::fast_singlestep)
    singlestep_[rsp.vcpu] = 0;  // Xen ends it after the one instruction
}

drv::give_result xen_ring::give(std::span<const drv::response> rsps) {
  if (rsps.empty())
    return {};
  for (auto& rsp : rsps) {
    to_response(rsp, *RING_GET_RESPONSE(&back_, back_.rsp_prod_pvt));
    ++back_.rsp_prod_pvt;
    track(rsp);
  }
  RING_PUSH_RESPONSES(&back_);
  // One notify for the batch: Xen applies every response in the ring inside it
  // (vm_event_resume), so a failed one carries over to the next that succeeds.
  // These answers are refused once, here, if the notify fails; retries count apart.
  owed_ += rsps.size();
  if (auto err = notify())
    return {rsps.size(), std::move(err)};
  return {};
}

caf::error xen_ring::notify() {
  if (api_.xenevtchn_notify(xce_, port_) == 0) {
    owed_ = 0;
    streak_ = 0;
    return {};
  }
  int err = errno;
  // 1 ms, doubling to 64 ms: quick for a passing failure, cheap for a lasting one.
  retry_at_ = clock::now() + std::chrono::milliseconds(1u << std::min<uint32_t>(streak_, 6));
  ++streak_;
  last_refusal_ = make_error(ec::driver_call_failed, "xenevtchn_notify", err);
  return last_refusal_;
}

caf::error xen_ring::retry_owed() {
  // The clock only while something is owed: a busy ring pays one branch.
  if (owed_ == 0 || clock::now() < retry_at_)
    return {};
  return notify();
}

void xen_ring::flush() {
  constexpr uint32_t teardown_streak = 12;  // ~0.5 s of backoff in all
  while (owed_ > 0) {
    std::this_thread::sleep_until(retry_at_);
    notify();
    if (streak_ >= teardown_streak)
      return;
  }
}

drv::arm_result xen_ring::arm() {
  drv::arm_result r;
  // The VCPUs waiting for owed answers cannot raise the request that would wake the poller:
  // the poller is told to come back when the next try is due.
  if (owed_ > 0) {
    r.refused = retry_owed();
    auto now = clock::now();
    if (owed_ > 0)
      r.retry_in = std::max(std::chrono::milliseconds(1),
                            std::chrono::ceil<std::chrono::milliseconds>(retry_at_ - now));
  }
  // Xen notifies on every request; the port is unmasked by acknowledge(). Sleep only if
  // nothing is waiting in the ring.
  r.pending = RING_HAS_UNCONSUMED_REQUESTS(&back_);
  return r;
}

void xen_ring::acknowledge() {
  // Called after poll() said readable, so pending() does not block.
  auto port = api_.xenevtchn_pending(xce_);
  if (port >= 0)
    api_.xenevtchn_unmask(xce_, evtchn_port_t(port));
}

size_t xen_ring::answer_leftovers() {
  std::vector<drv::event> in(8);
  std::vector<drv::response> out;
  size_t total = 0;
  for (;;) {
    // Answers whose notify failed reach Xen first: the slots they free let waiting VCPUs in.
    flush();
    auto n = take(in);
    if (n == 0)
      return total;
    total += n;
    out.clear();
    for (size_t i = 0; i < n; ++i) {
      auto rsp = drv::make_response(in[i]);
      rsp.flags |= drv::flag::alternate_p2m;  // view 0; never FAST here
      rsp.view = 0;
      if (singlestepping(in[i].vcpu))
        rsp.flags |= drv::flag::toggle_singlestep;
      out.push_back(rsp);
    }
    give(out);
  }
}

bool xen_ring::singlestepping(drv::vcpu_id vcpu) const {
  return vcpu < singlestep_.size() && singlestep_[vcpu];
}

void xen_ring::set_singlestepping(drv::vcpu_id vcpu, bool on) {
  if (vcpu < singlestep_.size())
    singlestep_[vcpu] = on;
}

}  // namespace vmitap::xen
