#include "actors/records/sinks.hpp"

#include "actors/model/log_limit.hpp"
#include "actors/records/hit_json.hpp"
#include "actors/records/line_file.hpp"
#include "drivers/error.hpp"

#include <caf/actor_system.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <spdlog/spdlog.h>

#include <optional>

namespace vmitap {

size_t record_bytes(const hit_record& rec) {
  size_t n = sizeof rec;
  for (auto& c : rec.captures)
    n += sizeof c + c.text.size();
  return n;
}

size_t sink_handle::offer(hit_batch batch) const {
  auto n = batch.size();
  // Reserve the whole batch, then give back what does not fit: concurrent senders never
  // pass a bound between them.
  size_t sizes = 0;
  // Numbered before anything is dropped: a record lost here leaves a gap in the file.
  auto seq = queue->offered.fetch_add(n, std::memory_order_relaxed);
  for (auto& rec : batch) {
    rec.seq = seq++;
    sizes += record_bytes(rec);
  }
  auto depth = queue->depth.fetch_add(n, std::memory_order_relaxed);
  auto bytes = queue->bytes.fetch_add(sizes, std::memory_order_relaxed);
  size_t kept = 0, kept_bytes = 0;
  for (auto& rec : batch) {
    auto size = record_bytes(rec);
    if (depth + kept + 1 > queue->bound || bytes + kept_bytes + size > queue->byte_bound)
      continue;
    if (&batch[kept] != &rec)
      batch[kept] = std::move(rec);
    ++kept;
    kept_bytes += size;
  }
  if (kept < n) {
    queue->depth.fetch_sub(n - kept, std::memory_order_relaxed);
    queue->bytes.fetch_sub(sizes - kept_bytes, std::memory_order_relaxed);
    queue->dropped.fetch_add(n - kept, std::memory_order_relaxed);
    batch.resize(kept);
  }
  if (kept > 0)
    caf::anon_send(actor, hit_atom_v, std::move(batch));
  return n - kept;
}

namespace {

/// Adds what `q` wrote, failed and dropped to `t`.
void add_counts(sink_book::totals& t, const sink_queue& q) {
  t.written += q.written.get();
  t.errors += q.errors.get();
  t.dropped += q.dropped.load(std::memory_order_relaxed);
}

}  // namespace

void sink_book::open(std::shared_ptr<sink_queue> q) {
  std::lock_guard g{mutex_};
  open_.push_back(std::move(q));
}

void sink_book::close(const sink_queue* q) {
  std::lock_guard g{mutex_};
  auto i = std::find_if(open_.begin(), open_.end(), [q](auto& x) { return x.get() == q; });
  if (i == open_.end())
    return;
  auto& closing = closing_[q->name];
  if (closing)
    add_counts(closed_[q->name], *closing);
  closing = std::move(*i);
  open_.erase(i);
}

std::vector<std::shared_ptr<sink_queue>> sink_book::open_sinks() const {
  std::lock_guard g{mutex_};
  return open_;
}

std::vector<sink_book::totals> sink_book::sum() const {
  std::lock_guard g{mutex_};
  std::map<std::string, totals> by_name = closed_;
  for (auto& [name, q] : closing_)
    add_counts(by_name[name], *q);
  for (auto& q : open_)
    add_counts(by_name[q->name], *q);
  std::vector<totals> out;
  for (auto& [name, t] : by_name) {
    out.push_back(t);
    out.back().name = name;
  }
  return out;
}

namespace {

struct sink_state {
  sink_state() = default;  // not an aggregate: CAF would build it from `self`
  sink_state(const sink_state&) = delete;
  sink_state& operator=(const sink_state&) = delete;
  ~sink_state();  // at exit: nothing buffered is lost
  static inline const char* name = "vmitap.sink";
  std::shared_ptr<sink_queue> queue;
  std::optional<line_file> out;
  std::string host;
  std::chrono::milliseconds flush_interval{100};
  bool tick_pending = false;
  size_t held_bytes = 0;  // record_bytes of what the buffer holds, given back at its flush
  bool failing = false;   // the last flush lost records (its recovery is logged)
  log_limit errors_log, rotation_log;
};

using sink_ptr = sink_actor::extend<caf::reacts_to<tick_atom>>::stateful_pointer<sink_state>;

void flush(sink_state& st) {
  auto records = st.out->buffered_records();
  auto r = st.out->flush();
  st.queue->written.add(r.written);
  st.queue->errors.add(r.failed);
  st.queue->depth.fetch_sub(records, std::memory_order_relaxed);
  st.queue->bytes.fetch_sub(std::exchange(st.held_bytes, 0), std::memory_order_relaxed);
  bool rotation_failed = r.error && r.failed == 0;  // every record written, then rotation failed
  if (rotation_failed && st.rotation_log.allow())
    spdlog::error("sink {}: {} (every record was written; rotation is retried at each flush){}",
                  st.queue->name, render(r.error), st.rotation_log.note());
  else if (r.error && !rotation_failed && st.errors_log.allow())
    spdlog::error(
      "sink {}: {} ({} records lost; all errors are counted in "
      "vmitap_sink_records_total{{result=\"error\"}}){}",
      st.queue->name, render(r.error), r.failed, st.errors_log.note());
  else if (!r.error && st.failing && r.written > 0)
    spdlog::info("sink {}: writing again", st.queue->name);
  if (r.failed > 0 || r.written > 0)
    st.failing = r.failed > 0;
}

sink_state::~sink_state() {
  if (out && queue)
    flush(*this);
}

sink_actor::extend<caf::reacts_to<tick_atom>>::behavior_type sink(
  sink_ptr self, std::shared_ptr<sink_queue> queue, line_file out, std::string host,
  std::chrono::milliseconds flush_interval) {
  auto& st = self->state;
  st.queue = std::move(queue);
  st.out.emplace(std::move(out));
  st.host = std::move(host);
  st.flush_interval = flush_interval;
  return {
    [self](hit_atom, const hit_batch& batch) {
      auto& st = self->state;
      for (auto& rec : batch) {
        st.out->append(to_json_line(rec, st.host));
        st.held_bytes += record_bytes(rec);
      }
      if (st.out->buffered_bytes() >= 64 * 1024) {
        flush(self->state);
      } else if (!st.tick_pending) {
        st.tick_pending = true;  // out within the flush interval, whatever comes next
        self->delayed_send(self, st.flush_interval, tick_atom_v);
      }
    },
    [self](tick_atom) {
      self->state.tick_pending = false;
      flush(self->state);
    },
    [self](flush_atom) {
      flush(self->state);
      return ok_atom_v;
    },
    [self](reopen_atom) -> caf::result<ok_atom> {
      auto& st = self->state;
      flush(self->state);
      if (auto err = st.out->reopen()) {
        spdlog::error("sink {}: reopen: {}", st.queue->name, render(err));
        return err;
      }
      return ok_atom_v;
    },
  };
}

}  // namespace

caf::expected<sink_handle> spawn_sink(caf::actor_system& sys, const sink_config& cfg,
                                      std::string host) {
  line_file::options opts;
  if (cfg.type == sink_config::kind::jsonl_file) {
    opts.path = cfg.path;
    opts.rotate_bytes = cfg.rotate_bytes;
    opts.rotate_keep = cfg.rotate_keep;
  }
  auto out = line_file::open(opts);
  if (!out)
    return make_error(ec::io_failed, "sink " + cfg.name + ": " + context_of(out.error()));
  auto queue = std::make_shared<sink_queue>(cfg.name, cfg.queue_bound, cfg.queue_bytes);
  auto actor =
    sys.spawn<caf::detached>(sink, queue, std::move(*out), std::move(host), cfg.flush_interval);
  return sink_handle{caf::actor_cast<sink_actor>(actor), queue};
}

}  // namespace vmitap
