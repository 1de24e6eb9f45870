#include "actors/event_path.hpp"

#include "drivers/error.hpp"

#include <spdlog/spdlog.h>

namespace vmitap {

using clock_type = std::chrono::steady_clock;
using verdict = vcpu_logic::verdict;

event_path::event_path(event_path_config cfg) :
  cfg_(std::move(cfg)), identity_(cfg_.domain->identity()) {
  for (size_t i = 0; i < cfg_.homes.size(); ++i)
    lanes_.emplace_back(cfg_.mode, cfg_.homes[i], i < cfg_.homing.size() && cfg_.homing[i]);
  // No ring holds more than one request per VCPU plus Xen's 8 slots' worth of others.
  in_.resize(std::clamp<size_t>(cfg_.batch, 1, lanes_.size() + 8));
  out_.reserve(in_.size());
  table_ = cfg_.domain->table().load();
}

size_t event_path::drain() {
  auto n = cfg_.ring->take(in_);
  if (n == 0)
    return 0;
  auto t0 = clock_type::now();
  // Wall-clock time only goes into records: read it only if there are sinks to get them.
  auto wall = cfg_.sinks.empty() ? std::chrono::system_clock::time_point{}
                                 : std::chrono::system_clock::now();
  // Every request taken was raised after any table published before the trap: one version
  // check per batch keeps hits exact.
  if (cfg_.domain->table().version() != table_->version)
    table_ = cfg_.domain->table().load();
  out_.clear();
  for (size_t i = 0; i < n; ++i)
    decide(in_[i], t0, wall);
  count_failures(cfg_.ring->give(out_));
  auto& c = cfg_.domain->counters();
  c.handling.observe(std::chrono::duration<double>(clock_type::now() - t0).count(), n);
  if (!records_.empty()) {
    for (size_t s = 0; s + 1 < cfg_.sinks.size(); ++s)
      cfg_.sinks[s].offer(records_);
    if (!cfg_.sinks.empty())
      cfg_.sinks.back().offer(std::move(records_));
    records_.clear();
  }
  return n;
}

void event_path::decide(const drv::event& ev, clock_type::time_point now,
                        std::chrono::system_clock::time_point wall) {
  auto& c = cfg_.domain->counters();
  if (ev.vcpu >= lanes_.size()) {
    c.orphans.add();  // Xen's one ring cannot tell whose it is; it must be answered all the same
    out_.push_back(drv::make_response(ev));
    return;
  }
  auto& lane = lanes_[ev.vcpu];
  auto& vc = c.vcpus[ev.vcpu];
  (ev.reason == drv::event_reason::mem_access   ? vc.mem_access
   : ev.reason == drv::event_reason::singlestep ? vc.singlestep
                                                : vc.other)
    .add();
  hits_.clear();
  verdict v;
  out_.push_back(lane.decide(ev, table_.get(), hits_, v));
  vc.stepping.store(lane.stepping(), std::memory_order_relaxed);
  switch (v) {
    case verdict::hit:
      vc.hits.add(hits_.size());
      for (auto& bp : hits_) {
        // One writer, the poller that owns this domain's ring: no locked add needed.
        bp->hits.store(bp->hits.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        if (cfg_.sinks.empty())
          continue;
        records_.push_back({identity_, ev.vcpu, ev.view, ev.mem.gfn, ev.mem.offset, ev.mem.gla,
                            ev.regs.rip, ev.regs.cr3, bp, now, wall, {}});
        if (!bp->captures.empty())
          records_.back().captures = capture(*bp->captures.specs, ev.regs);
      }
      break;
    case verdict::neighbour: vc.neighbours.add(); break;
    case verdict::stale: vc.stale.add(); break;
    case verdict::spurious: vc.spurious.add(); break;
    case verdict::singlestep: break;
    case verdict::bad_version: vc.malformed[size_t(malformed_cause::bad_version)].add(); break;
    case verdict::unknown_reason: vc.malformed[size_t(malformed_cause::unknown_reason)].add(); break;
  }
}

std::vector<capture_value> event_path::capture(const std::vector<capture_spec>& specs,
                                               const drv::registers& regs) {
  // The VCPU is paused until the batch is answered: what it reads now is the guest at the
  // hit. One walker per capture list: its cache never outlives the pause.
  drv::page_walker walker{*cfg_.session};
  auto values = evaluate(specs, regs, walker);
  auto& failures = cfg_.domain->counters().capture_failures;
  for (auto& v : values)
    if (v.fault != drv::translation_fault::none)
      failures[size_t(v.fault)].add();
  return values;
}

void event_path::count_failures(const drv::give_result& r) {
  if (r.failed == 0) {
    failing_ = false;
    return;
  }
  cfg_.domain->counters().respond_failures.add(r.failed);
  if (!failing_)
    spdlog::error("domain {} ({}): the hypervisor refused {} response(s), a VCPU may stay "
                  "paused: {} (further refusals are counted in vmitap_respond_failures_total)",
                  identity_->name, identity_->id, r.failed, render(r.first));
  failing_ = true;
}

}  // namespace vmitap
