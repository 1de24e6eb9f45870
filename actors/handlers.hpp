#pragma once

// Hit handlers: code that decides a breakpoint's hit while the trapped VCPU is still paused.
// A handler gets the hit (its registers and the breakpoint's captures) and answers with a
// decision: resume as vmitap would, or resume with registers changed (return early from a
// function, change an argument). Only that VCPU waits, at most the breakpoint's deadline;
// every other VCPU and domain keeps running. Handlers are registered by name by the program
// that embeds vmitap (handler_registry.hpp); a config chooses one per breakpoint.

#include "actors/messages.hpp"

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

}  // namespace vmitap

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vmitap::handler_hit)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vmitap::handler_decision)
