// libFuzzer: arbitrary requests as the hypervisor could write them, through the Xen codec
// (ring slot → port types) and into each VCPU's decision. Whatever arrives gets exactly one
// response for the VCPU it names, with the current interface version and the pause flag
// echoed; the codec round-trips what it decodes.

#include "actors/hotpath/vcpu_logic.hpp"
#include "drivers/xen/codec.hpp"
#include "tests/fuzz/fuzz_checks.hpp"

#include <cstdlib>
#include <cstring>
#include <vector>

using namespace vmitap;
using namespace vmitap::fuzz;

namespace {

table_ptr make_table() {
  table_builder b({1, 2});
  for (uint64_t i = 0; i < 4; ++i)
    for (drv::view_id view : {drv::view_id(1), drv::view_id(2)})
      b.add(make_breakpoint(breakpoint_def::at("bp", drv::pa_of(0x100 + i, i * 16)), view,
                            armed_by::attach));
  return b.build();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto table = make_table();
  if (size < 2)
    return 0;
  auto mode = step_mode(data[0] % 3);
  std::vector<vcpu_logic> lanes;
  for (drv::vcpu_id i = 0; i < 4; ++i)
    lanes.emplace_back(mode, drv::view_id(1 + (i & 1)), (data[1] >> i) & 1);
  data += 2;
  size -= 2;
  std::vector<breakpoint_ptr> hits;
  // Each request is a whole ring slot's worth of bytes, as Xen could have left it.
  for (; size >= sizeof(vm_event_request_t);
       data += sizeof(vm_event_request_t), size -= sizeof(vm_event_request_t)) {
    vm_event_request_t req;
    std::memcpy(&req, data, sizeof req);
    auto ev = xen::from_request(req);
    vm_event_request_t again{};
    xen::to_request(ev, again);
    auto round = xen::from_request(again);
    require(round.vcpu == ev.vcpu && round.reason == ev.reason && round.regs == ev.regs &&
            round.mem == ev.mem && round.view == ev.view);
    if (ev.vcpu >= lanes.size())
      continue;  // the event path answers these plainly (counted as orphans)
    hits.clear();
    vcpu_logic::verdict v;
    auto rsp = lanes[ev.vcpu].decide(ev, table.get(), hits, v);
    require(rsp.vcpu == ev.vcpu);
    require(rsp.version == drv::interface_version);
    require((rsp.flags & drv::flag::vcpu_paused) == (ev.flags & drv::flag::vcpu_paused));
    require((v == vcpu_logic::verdict::hit) == !hits.empty());
    vm_event_response_t out{};
    xen::to_response(rsp, out);
    auto back = xen::from_response(out);
    require(back.vcpu == rsp.vcpu && back.flags == rsp.flags);
  }
  return 0;
}
