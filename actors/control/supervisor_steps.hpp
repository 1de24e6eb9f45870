#pragma once

// The supervisor's steps that its attach and its teardown share (domain_supervisor.cpp,
// supervisor_teardown.cpp). Not an interface: only the supervisor includes it.

#include "actors/control/domain_supervisor.hpp"

namespace vmitap::supervisor {

using state_ptr = domain_supervisor_impl::stateful_pointer<domain_supervisor_state>;
using phase = domain_supervisor_state::phase;

/// Keeps the first error; a domain that died is not a failure of the call that noticed it.
void note(state_ptr self, caf::error& first, caf::error err);

/// Asks the poller for something (`start` gets the callback to run when done) and continues
/// with `then` on this actor, or after `timeout` if the poller does not answer.
void await_poller(state_ptr self, std::chrono::milliseconds timeout,
                  std::function<void(std::function<void()>)> start,
                  std::function<void(bool timed_out)> then);

/// The session's counts so far (no breakpoints).
domain_report base_report(state_ptr self);
/// The report with every breakpoint and its hit count.
void full_report(state_ptr self, std::function<void(domain_report)> done);

/// The driver's detach, the children told to exit, the report delivered (or kept for the
/// detach to come).
void finish_teardown(state_ptr self, domain_report report, caf::error err);
/// The ordered teardown, from whatever exists: pause → final drain → report → remove
/// breakpoints → restore access and destroy views → driver detach.
void teardown(state_ptr self, caf::error first);
/// The teardown's current step has finished (with `err`, noted): on to the next.
void step_done(state_ptr self, caf::error err);

}  // namespace vmitap::supervisor
