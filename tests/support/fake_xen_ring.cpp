// Xen's side of the vm_event ring: requests put with Xen's RING_* macros (8 slots, the rest
// on the waitqueue), vm_event_resume's rules applied to responses at the notify, and the
// event channel fired towards the monitor.

#include "tests/support/fake_xen_internal.hpp"

#include "drivers/error.hpp"
#include "drivers/xen/codec.hpp"

#include <unistd.h>
#include <cstring>

namespace vmitap::testing {

namespace {

bool violates(uint32_t attempted, drv::page_access now) {
  auto a = uint8_t(now);
  return ((attempted & MEM_ACCESS_R) && !(a & 1)) || ((attempted & MEM_ACCESS_W) && !(a & 2)) ||
         ((attempted & MEM_ACCESS_X) && !(a & 4));
}

}  // namespace

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

void fake_xen::apply(domain_state& d, const vm_event_response_t& in,
                     const vm_event_request_t& req) {
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
      still =
        !d.dom->get_access(s, view, {&g, 1}, {&now, 1}) && violates(rsp.u.mem_access.flags, now);
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

int fake_xen::impl::unmap_ring(void* page, size_t) {
  enter("unmap_ring");
  std::lock_guard g{f().mutex_};
  for (auto& [id, d] : f().domains_)
    if (d->page == page)
      return 0;  // Xen's own mapping stays until the fake goes
  f().violations_.push_back("unmap_ring: not a ring page");
  return fail(EINVAL);
}

}  // namespace vmitap::testing
