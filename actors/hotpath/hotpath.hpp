#pragma once

// The hotpath room: what runs per request. Pollers own the domains' rings; each domain's
// event_path drains its ring, decides every request with its VCPU's logic (vcpu_logic) and
// the newest breakpoint table, answers the batch with one notify and hands hit records to
// the sinks and held hits to the handler relay. It uses model, records and handlers; it
// never reaches control: what it tells the registry goes through the interface below.

#include "actors/model/breakpoint.hpp"

#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

namespace vmitap {

/// Told of a breakpoint that went over its rate limit (the domain's registry is one).
using suppression_actor = caf::typed_actor<caf::reacts_to<suppress_atom, breakpoint_ptr>>;

}  // namespace vmitap
