#include "actors/vcpu.hpp"

#include "engine/error.hpp"

#include <algorithm>

namespace vmitap {

using drv::event_reason;
namespace flag = drv::flag;

void vcpu_logic::step_over(drv::response& rsp) {
  // Only this VCPU leaves the monitored view; the others keep trapping.
  rsp.flags |= flag::alternate_p2m;
  rsp.view = 0;
  if (mode_ == step_mode::fast) {
    rsp.flags |= flag::fast_singlestep;
    rsp.fast_return_view = home_view_;
    return;
  }
  if (!singlestep_on_) {
    rsp.flags |= flag::toggle_singlestep;
    singlestep_on_ = true;
  }
  stepping_ = true;
}

drv::response vcpu_logic::decide(const drv::event& ev, const breakpoint_table* table,
                                 std::vector<breakpoint_ptr>& hits, verdict& out) {
  auto rsp = drv::make_response(ev);  // right version, pause flag, echoes
  if (ev.version != drv::interface_version) {
    out = verdict::bad_version;
    return rsp;
  }
  switch (ev.reason) {
    case event_reason::mem_access: {
      auto pa = drv::pa_of(ev.mem.gfn, ev.mem.offset);
      const auto* page = table ? table->find(ev.view, ev.mem.gfn) : nullptr;
      if (page && allows(ev.mem.attempted, drv::page_access::x)) {
        for (const auto& bp : *page)
          if (bp->spec.pa == pa)
            hits.push_back(bp);
        out = hits.empty() ? verdict::neighbour : verdict::hit;
      } else {
        // Not (or no longer) a monitored page: removed while the event was in flight, or
        // not ours at all. Either way the VCPU must get past the instruction.
        out = table && table->manages(ev.view) ? verdict::stale : verdict::spurious;
      }
      step_over(rsp);
      return rsp;
    }
    case event_reason::singlestep:
      out = verdict::singlestep;
      if (stepping_) {
        rsp.flags |= flag::alternate_p2m | flag::toggle_singlestep;
        rsp.view = home_view_;
        stepping_ = false;
        singlestep_on_ = false;
      } else {
        out = verdict::spurious;
      }
      return rsp;
    default:
      out = verdict::unknown_reason;
      return rsp;
  }
}

vcpu_actor::behavior_type vcpu(vcpu_actor::stateful_pointer<vcpu_state> self, vcpu_config cfg) {
  self->state.logic = vcpu_logic{cfg.mode, cfg.home_view};
  self->state.cfg = std::move(cfg);
  return {
    [self](event_atom, const drv::event& ev, int64_t seen_ns) {
      auto& st = self->state;
      auto& m = *st.cfg.metrics;
      ++st.stats.events;
      st.hits.clear();
      vcpu_logic::verdict v;
      bool was_stepping = st.logic.stepping();
      auto rsp = st.logic.decide(ev, st.table.get(), st.hits, v);
      // Answer first: the guest VCPU waits for it; the records can follow.
      if (auto err = st.cfg.session->respond(rsp))
        ++st.stats.respond_failures;
      m.handling().Observe(double(seen_now() - seen_ns) * 1e-9);
      auto& series = m.vcpu(st.cfg.vcpu);
      (ev.reason == drv::event_reason::mem_access   ? series.mem_access
       : ev.reason == drv::event_reason::singlestep ? series.singlestep
                                                    : series.other)
        ->Increment();
      if (st.logic.stepping() != was_stepping) {
        if (st.logic.stepping())
          m.vcpus_stepping().Increment();
        else
          m.vcpus_stepping().Decrement();
      }
      switch (v) {
        case vcpu_logic::verdict::hit: {
          auto now = std::chrono::steady_clock::now();
          for (auto& bp : st.hits) {
            bp->hits->fetch_add(1, std::memory_order_relaxed);
            bp->hits_metric->Increment();
            ++st.stats.hits;
            hit_record rec{st.cfg.domain, st.cfg.domain_name, ev.vcpu,   ev.view,
                           ev.mem.gfn,    ev.regs.rip,        ev.regs.cr3, bp, now};
            for (auto& sink : st.cfg.sinks)
              st.stats.hits_dropped += !sink.offer(rec);
          }
          break;
        }
        case vcpu_logic::verdict::neighbour:
          ++st.stats.neighbours;
          m.neighbours().Increment();
          break;
        case vcpu_logic::verdict::stale:
          ++st.stats.stale;
          m.stale().Increment();
          break;
        case vcpu_logic::verdict::spurious: ++st.stats.spurious; break;
        case vcpu_logic::verdict::singlestep: ++st.stats.singlesteps; break;
        case vcpu_logic::verdict::bad_version:
          ++st.stats.malformed;
          m.malformed(malformed_cause::bad_version).Increment();
          break;
        case vcpu_logic::verdict::unknown_reason:
          ++st.stats.malformed;
          m.malformed(malformed_cause::unknown_reason).Increment();
          break;
      }
    },
    [self](snapshot_atom, table_ptr& table) {
      if (!self->state.table || table->version > self->state.table->version)
        self->state.table = std::move(table);
    },
    [self](drain_atom) { return self->state.stats; },
  };
}

}  // namespace vmitap
