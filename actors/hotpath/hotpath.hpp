#pragma once

// The hotpath room: what runs per request. Pollers own the domains' rings; each domain's
// event_path drains its ring, decides every request with its VCPU's logic (vcpu_logic) and
// the newest breakpoint table, answers the batch with one notify and hands hit records to
// the sinks and held hits to the handler relay. It uses model, records and handlers; it
// never reaches control: what it tells the registry goes through the interface below.

#include "actors/handlers/handler_relay.hpp"
#include "actors/model/breakpoint.hpp"

#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

namespace vmitap {

/// A VCPU wrote a watched page table and stands paused on the SINGLESTEP after the write:
/// the registry walks the tables again, arms or disarms what the write changed, and only then
/// lets the path answer (`path->decided(vcpu, token, {})`), so the guest cannot run code its
/// write mapped before the breakpoints on it are armed.
struct table_write {
  drv::gfn_t gfn = 0;        ///< the page table written
  uint64_t cr3 = 0;          ///< the writer's
  bool kernel_mode = false;  ///< the writer's cr3 maps the kernel (CPL 0)
  drv::vcpu_id vcpu = 0;
  uint64_t token = 0;
  std::weak_ptr<held_responses> path;
};

/// What the hot path tells the domain's registry: a breakpoint over its rate limit, a page
/// table written.
using registry_notice_actor = caf::typed_actor<caf::reacts_to<suppress_atom, breakpoint_ptr>,
                                               caf::reacts_to<walk_atom, table_write>>;

}  // namespace vmitap
