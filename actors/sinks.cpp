#include "actors/sinks.hpp"

#include "engine/error.hpp"

#include <caf/actor_system.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <cerrno>
#include <cinttypes>
#include <filesystem>

namespace vmitap {

bool sink_handle::offer(hit_record rec) const {
  if (queue->depth.fetch_add(1, std::memory_order_relaxed) >= queue->bound) {
    queue->depth.fetch_sub(1, std::memory_order_relaxed);
    queue->metrics.dropped->Increment();
    return false;
  }
  queue->metrics.depth->Increment();
  caf::anon_send(actor, hit_atom::value, std::move(rec));
  return true;
}

namespace {

void append_json_string(std::string& out, const std::string& s) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += char(c);
        }
    }
  }
  out += '"';
}

}  // namespace

std::string to_json(const hit_record& rec) {
  std::string out;
  out.reserve(256);
  char buf[160];
  std::snprintf(buf, sizeof buf, "{\"domain_id\":%" PRIu32 ",\"domain\":", rec.domain);
  out += buf;
  append_json_string(out, rec.domain_name ? *rec.domain_name : std::string{});
  std::snprintf(buf, sizeof buf,
                ",\"vcpu\":%" PRIu32 ",\"view\":%u,\"gfn\":%" PRIu64 ",\"pa\":\"0x%" PRIx64
                "\",\"rip\":\"0x%" PRIx64 "\",\"cr3\":\"0x%" PRIx64 "\",\"breakpoint\":",
                rec.vcpu, unsigned(rec.view), rec.gfn, rec.bp->spec.pa, rec.rip, rec.cr3);
  out += buf;
  append_json_string(out, rec.bp->spec.name);
  out += ",\"tags\":[";
  for (size_t i = 0; i < rec.bp->spec.tags.size(); ++i) {
    if (i > 0)
      out += ',';
    append_json_string(out, rec.bp->spec.tags[i]);
  }
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(rec.at.time_since_epoch());
  std::snprintf(buf, sizeof buf, "],\"monotonic_ns\":%lld}", static_cast<long long>(ns.count()));
  out += buf;
  return out;
}

namespace {

struct sink_state {
  sink_state() = default;  // not an aggregate: CAF would build it from `self`
  static inline const char* name = "vmitap.sink";
  std::shared_ptr<sink_queue> queue;
  sink_config cfg;
  std::FILE* out = nullptr;
  bool owns_file = false;
  uint64_t bytes = 0;
  ~sink_state() {
    if (owns_file && out)
      std::fclose(out);
  }
};

void rotate(sink_state& st) {
  std::fclose(st.out);
  std::error_code ec;
  std::filesystem::rename(st.cfg.path, st.cfg.path + ".1", ec);
  st.out = std::fopen(st.cfg.path.c_str(), "a");
  st.bytes = 0;
}

sink_actor::behavior_type sink(sink_actor::stateful_pointer<sink_state> self,
                               std::shared_ptr<sink_queue> queue, sink_config cfg,
                               std::FILE* out, bool owns_file) {
  self->state.queue = std::move(queue);
  self->state.cfg = std::move(cfg);
  self->state.out = out;
  self->state.owns_file = owns_file;
  if (owns_file)
    self->state.bytes = uint64_t(std::ftell(out));
  return {
    [self](hit_atom, const hit_record& rec) {
      auto& st = self->state;
      auto line = to_json(rec);
      line += '\n';
      if (st.out) {
        std::fwrite(line.data(), 1, line.size(), st.out);
        st.bytes += line.size();
        if (st.cfg.rotate_bytes != 0 && st.bytes >= st.cfg.rotate_bytes && st.owns_file)
          rotate(st);
      }
      st.queue->metrics.written->Increment();
      st.queue->metrics.depth->Decrement();
      st.queue->depth.fetch_sub(1, std::memory_order_relaxed);
    },
    [self](flush_atom) {
      if (self->state.out)
        std::fflush(self->state.out);
      return ok_atom::value;
    },
  };
}

}  // namespace

caf::expected<sink_handle> spawn_sink(caf::actor_system& sys, const sink_config& cfg,
                                      sink_metrics metrics) {
  std::FILE* out = stdout;
  bool owns = false;
  if (cfg.type == sink_config::kind::jsonl_file) {
    out = std::fopen(cfg.path.c_str(), "a");
    if (!out)
      return make_driver_error("fopen(" + cfg.path + ") for sink " + cfg.name, errno);
    owns = true;
  }
  auto queue = std::make_shared<sink_queue>(cfg.name, cfg.queue_bound, metrics);
  auto actor = sys.spawn<caf::detached>(sink, queue, cfg, out, owns);
  return sink_handle{actor, queue};
}

}  // namespace vmitap
