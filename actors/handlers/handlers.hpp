#pragma once

// The handlers room: hit handlers, their registry by name and the relay that takes held hits
// to them. It uses the model room only.
//
// Hit handlers: code that decides a breakpoint's hit while the trapped VCPU is still paused.
// A handler gets the hit (its registers and the breakpoint's captures) and answers with a
// decision: resume as vmitap would, or resume with registers changed (return early from a
// function, change an argument). Only that VCPU waits, at most the breakpoint's deadline;
// every other VCPU and domain keeps running. Handlers are registered by name by the program
// that embeds vmitap (handler_registry.hpp); a config chooses one per breakpoint.

#include "actors/model/hit.hpp"

#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include <chrono>
#include <optional>

namespace vmitap {

/// What a handler is told about one hit: where (hit_site), and every register at the trap
/// (rip is the breakpoint's instruction).
struct handler_hit : hit_site {
  drv::registers regs;
  /// When vmitap stops waiting: past it the VCPU has resumed unchanged and any decision is
  /// ignored. A function handler is not called for a hit whose deadline passed while it
  /// was queued; an actor handler may check it itself.
  std::chrono::steady_clock::time_point deadline;
};

/// A handler's answer.
struct handler_decision {
  /// Set: the VCPU resumes with these registers (rax–r15, rflags, rip; cr3 is never written).
  /// A changed rip resumes the VCPU there instead of stepping over the trapped instruction.
  std::optional<drv::registers> registers;

  static handler_decision resume() { return {}; }
  static handler_decision with(const drv::registers& regs) { return {regs}; }
  /// At a function's first instruction: return to `return_address` (what the caller left at
  /// [rsp]) with `rax`, as the function's own `ret` would, without running it.
  static handler_decision return_from_call(const handler_hit& hit, uint64_t return_address,
                                           uint64_t rax);
};

/// A hit handler (handler_registry.hpp): answers each hit with what the VCPU resumes with.
/// The VCPU waits for the answer at most its breakpoint's deadline.
using hit_handler_actor =
  caf::typed_actor<caf::replies_to<hit_atom, handler_hit>::with<handler_decision>>;

}  // namespace vmitap
