#pragma once

// vm_event requests and responses to and from the port's types, field by field. What Xen
// reads from a response (docs/DESIGN.md §9): version, vcpu_id, VCPU_PAUSED, the echoed reason and
// u.mem_access (EMULATE needs them), the whole register block for SET_REGISTERS, and for
// FAST_SINGLESTEP the return view in u.fast_singlestep.p2midx (which overlays the low bits
// of u.mem_access.gfn, so it is written after the echo and never with EMULATE).

#include "drivers/vm_event.hpp"
#include "drivers/xen/xen_headers.hpp"

namespace vmitap::xen {

drv::event from_request(const vm_event_request_t& req);
void to_response(const drv::response& rsp, vm_event_response_t& out);
/// A VCPU's registers from its HVM save record (xc_domain_hvm_getcontext_partial, CPU).
drv::registers from_hvm_cpu(const hvm_hw_cpu& cpu);
/// For tests and the fake: the reverse directions.
void to_hvm_cpu(const drv::registers& r, hvm_hw_cpu& cpu);
void to_request(const drv::event& ev, vm_event_request_t& out);
drv::response from_response(const vm_event_response_t& rsp);

}  // namespace vmitap::xen
