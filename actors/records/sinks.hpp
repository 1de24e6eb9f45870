#pragma once

// Hit sinks: JSON lines to a file (rotated, reopened on request) or to standard output. Each
// sink is a detached actor (it blocks on I/O). Senders bound what they have queued at it and
// count what a full queue drops; a guest's response never waits for a sink.

#include "actors/model/counters.hpp"
#include "actors/records/records.hpp"
#include "drivers/defaults.hpp"

#include <caf/fwd.hpp>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace vmitap {

struct sink_config {
  std::string name;
  enum class kind : uint8_t { stdout_lines, jsonl_file } type = kind::stdout_lines;
  std::string path;           ///< jsonl_file
  uint64_t rotate_bytes = 0;  ///< jsonl_file: rotate beyond this size; 0: never
  uint32_t rotate_keep = defaults::sink_rotate_keep;  ///< jsonl_file: rotated generations kept
  size_t queue_bound = defaults::sink_queue_bound;
  size_t queue_bytes = defaults::sink_queue_bytes;
  std::chrono::milliseconds flush_interval = defaults::sink_flush_interval;
  bool operator==(const sink_config&) const = default;
};

/// What a sink's senders and the sink share: the queue's bounds and the counts.
struct sink_queue {
  sink_queue(std::string sink_name, size_t max_depth, size_t max_bytes) :
    name(std::move(sink_name)), bound(max_depth), byte_bound(max_bytes) {}
  const std::string name;
  const size_t bound;
  const size_t byte_bound;
  std::atomic<size_t> depth{0};      ///< records sent, not yet written or failed
  std::atomic<size_t> bytes{0};      ///< their size in memory (record_bytes)
  std::atomic<uint64_t> offered{0};  ///< records ever offered: the next one's `seq`
  counter written;                   ///< the sink's own counts: one writer
  counter errors;
  std::atomic<uint64_t> dropped{0};  ///< by any sender
};

/// What a record holds in memory until its sink has written it.
size_t record_bytes(const hit_record& rec);

/// What a sender holds of a sink.
struct sink_handle {
  sink_actor actor;
  std::shared_ptr<sink_queue> queue;

  /// Sends what fits under both bounds (records and bytes) and drops (and counts) the rest,
  /// in order: a record that does not fit drops, a smaller one after it may still go.
  /// Returns how many it dropped.
  size_t offer(hit_batch batch) const;
};

/// Every sink of a run: the open ones (what the exporter shows) and what the ones a reload
/// closed wrote, failed and dropped, by name, so the summary and the exit code count the
/// run's whole life. Thread-safe.
class sink_book {
public:
  struct totals {
    std::string name;
    uint64_t written = 0, errors = 0, dropped = 0;
    /// Records lost: not written (an error) or never queued (a full queue).
    uint64_t lost() const { return errors + dropped; }
  };

  void open(std::shared_ptr<sink_queue> q);
  /// No session sends to it any more; its counts go on into the totals.
  void close(const sink_queue* q);
  std::vector<std::shared_ptr<sink_queue>> open_sinks() const;
  /// By name, open and closed together.
  std::vector<totals> sum() const;

private:
  mutable std::mutex mutex_;
  std::vector<std::shared_ptr<sink_queue>> open_;
  /// A reload closes a sink after its sessions are gone and flushes it before the next
  /// reload: one closed queue per name is still counting, older ones are added up.
  std::map<std::string, std::shared_ptr<sink_queue>> closing_;
  std::map<std::string, totals> closed_;
};

/// Opens the sink's output; a path that cannot be opened is an error naming it and errno.
/// `host` goes into every record.
caf::expected<sink_handle> spawn_sink(caf::actor_system& sys, const sink_config& cfg,
                                      std::string host);

}  // namespace vmitap
