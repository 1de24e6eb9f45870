#pragma once

// Hit sinks: JSON lines to a file (rotated, reopened on request) or to standard output. Each
// sink is a detached actor (it blocks on I/O). Senders bound what they have queued at it and
// count what a full queue drops; a guest's response never waits for a sink.

#include "actors/counters.hpp"
#include "actors/interfaces.hpp"

#include <caf/fwd.hpp>

#include <atomic>
#include <chrono>
#include <string>

namespace vmitap {

struct sink_config {
  std::string name;
  enum class kind : uint8_t { stdout_lines, jsonl_file } type = kind::stdout_lines;
  std::string path;           ///< jsonl_file
  uint64_t rotate_bytes = 0;  ///< jsonl_file: rotate beyond this size; 0: never
  uint32_t rotate_keep = 5;   ///< jsonl_file: rotated generations kept
  size_t queue_bound = 65536;
  std::chrono::milliseconds flush_interval{100};
  bool operator==(const sink_config&) const = default;
};

/// What a sink's senders and the sink share: the queue bound and the counts.
struct sink_queue {
  sink_queue(std::string sink_name, size_t max_depth) :
    name(std::move(sink_name)), bound(max_depth) {}
  const std::string name;
  const size_t bound;
  std::atomic<size_t> depth{0};  ///< records sent, not yet written or failed
  counter written;               ///< the sink's own counts: one writer
  counter errors;
  std::atomic<uint64_t> dropped{0};  ///< by any sender
};

/// What a sender holds of a sink.
struct sink_handle {
  sink_actor actor;
  std::shared_ptr<sink_queue> queue;

  /// Sends what fits under the bound and drops (and counts) the rest. Returns how many it
  /// dropped.
  size_t offer(hit_batch batch) const;
};

/// Opens the sink's output; a path that cannot be opened is an error naming it and errno.
/// `host` goes into every record.
caf::expected<sink_handle> spawn_sink(caf::actor_system& sys, const sink_config& cfg,
                                      std::string host);

}  // namespace vmitap
