#pragma once

// The records room: where hit records go. Sinks (JSON lines to a file, rotated and reopened,
// or to standard output), each a detached actor bounded in records and bytes, the line file
// under them and the JSON a record becomes. It uses the model room only.

#include "actors/model/hit.hpp"

#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

namespace vmitap {

/// Receives hit records; writes them somewhere.
using sink_actor = caf::typed_actor<
  /// Records of one ring drain; never blocks the sender (it bounds what it has in flight).
  caf::reacts_to<hit_atom, hit_batch>,
  /// Answered once every earlier record is written out (or counted as failed).
  caf::replies_to<flush_atom>::with<ok_atom>,
  /// Closes and reopens the file (logrotate moved it); flushes first.
  caf::replies_to<reopen_atom>::with<ok_atom>>;

}  // namespace vmitap
