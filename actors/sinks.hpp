#pragma once

// Hit sinks: stdout and JSON-lines files. Each sink is a detached actor (it blocks on I/O);
// senders bound what they have queued at it through a shared `sink_queue` and count drops.

#include "actors/interfaces.hpp"
#include "engine/metrics.hpp"

#include <caf/fwd.hpp>

#include <atomic>
#include <cstdio>
#include <string>

namespace vmitap {

/// The bound on one sink's mailbox, shared by its senders and the sink.
struct sink_queue {
  sink_queue(std::string sink_name, size_t max_depth, sink_metrics m)
    : name(std::move(sink_name)), bound(max_depth), metrics(m) {}
  const std::string name;
  const size_t bound;
  const sink_metrics metrics;  ///< written / dropped / depth, as exported
  std::atomic<size_t> depth{0};
};

/// What a sender holds of a sink.
struct sink_handle {
  sink_actor actor;
  std::shared_ptr<sink_queue> queue;

  /// Sends unless the sink already has `bound` records queued; then counts a drop.
  bool offer(hit_record rec) const;
};

/// One JSON object per hit, without a trailing newline.
std::string to_json(const hit_record& rec);

struct sink_config {
  std::string name;
  enum class kind : uint8_t { stdout_lines, jsonl_file } type = kind::stdout_lines;
  std::string path;              ///< jsonl_file
  uint64_t rotate_bytes = 0;     ///< jsonl_file: rotate to path.1 beyond this size; 0: never
  size_t queue_bound = 65536;
};

/// Opens the sink's output; a path that cannot be opened is an error naming it and errno.
caf::expected<sink_handle> spawn_sink(caf::actor_system& sys, const sink_config& cfg,
                                      sink_metrics metrics);

}  // namespace vmitap
