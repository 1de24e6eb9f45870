#include "actors/hotpath/event_path.hpp"

#include "drivers/error.hpp"

#include <caf/send.hpp>

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
  held_.resize(lanes_.size());
  table_ = cfg_.domain->table().load();
}

size_t event_path::drain() {
  if (auto err = cfg_.ring->retry_owed())
    log_refusal(err, 0);
  auto n = cfg_.ring->take(in_);
  if (n == 0)
    return 0;
  auto t0 = clock_type::now();
  // Wall-clock time only goes into records: read it only if there are sinks to get them.
  auto wall =
    cfg_.sinks.empty() ? std::chrono::system_clock::time_point{} : std::chrono::system_clock::now();
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

drv::arm_result event_path::arm() {
  auto r = cfg_.ring->arm();
  if (r.refused)
    log_refusal(r.refused, 0);
  return r;
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
  auto before = lane;
  out_.push_back(lane.decide(ev, table_.get(), hits_, v));
  vc.stepping.store(lane.stepping(), std::memory_order_relaxed);
  if (v == verdict::hit)
    hit(ev, before, now, wall);
  else if (v == verdict::table_written)
    hold_for_walk(ev, before);
  else if (v == verdict::table_bits && hit_behind_walk(ev, before, now, wall))
    cfg_.domain->counters().table_bits.add();
  else
    count(v, vc);
}

bool event_path::hit_behind_walk(const drv::event& ev, const vcpu_logic& before,
                                 clock_type::time_point now,
                                 std::chrono::system_clock::time_point wall) {
  // The fetch's own walk trapped: stepped over in view 0, the instruction runs there and
  // never meets its page's missing Execute. If it is a breakpoint's, this is its hit.
  if (!ev.mem.gla_valid || ev.mem.gla != ev.regs.rip || !cfg_.session)
    return false;
  drv::page_walker walker{*cfg_.session};
  auto t = walker.translate(ev.regs.cr3, ev.regs.rip);
  if (!t)
    return false;
  breakpoints_at(table_->find(ev.view, drv::gfn_of(t.pa)), t.pa & drv::page_mask, hits_);
  if (hits_.empty())
    return false;
  auto fetch = ev;
  fetch.mem = {drv::gfn_of(t.pa), t.pa & drv::page_mask, ev.regs.rip, drv::page_access::x, true};
  hit(fetch, before, now, wall);
  return true;
}

void event_path::count(verdict v, vcpu_counters& vc) {
  switch (v) {
    case verdict::hit:
    case verdict::singlestep:
    case verdict::table_written:
      return;
    case verdict::table_write:
      return cfg_.domain->counters().table_writes.add();
    case verdict::table_bits:
      return cfg_.domain->counters().table_bits.add();
    case verdict::neighbour:
      return vc.neighbours.add();
    case verdict::data_access:
      return vc.data_accesses.add();
    case verdict::stale:
      return vc.stale.add();
    case verdict::spurious:
      return vc.spurious.add();
    case verdict::bad_version:
      return vc.malformed[size_t(malformed_cause::bad_version)].add();
    case verdict::unknown_reason:
      return vc.malformed[size_t(malformed_cause::unknown_reason)].add();
  }
}

uint64_t event_path::count_hit(const breakpoint_ptr& bp, clock_type::time_point now) {
  // One writer, the poller that owns this domain's ring: no locked add needed.
  bp->hits.store(bp->hits.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  // Read before the registry can hear of this hit: the record says how often the breakpoint
  // was disarmed before it.
  auto* limiter = bp->limiter();
  uint64_t suppressions = limiter ? limiter->suppressions() : 0;
  if (limiter && limiter->over(now) && cfg_.registry)
    caf::anon_send(cfg_.registry, suppress_atom_v, bp);
  return suppressions;
}

void event_path::hit(const drv::event& ev, const vcpu_logic& before, clock_type::time_point now,
                     std::chrono::system_clock::time_point wall) {
  auto& vc = cfg_.domain->counters().vcpus[ev.vcpu];
  // Read only if a record, a handler or a filter will use it.
  bool used = !cfg_.sinks.empty() || std::any_of(hits_.begin(), hits_.end(), [&](auto& bp) {
    return (bp->handler() && cfg_.relay) || !bp->processes().empty();
  });
  auto process = used ? process_at(ev) : std::nullopt;
  bool held = false;
  for (auto& bp : hits_) {
    // A process that cannot be read is reported: a filter never loses a hit it cannot judge.
    if (process && !bp->reports(process->name)) {
      vc.filtered.add();
      bp->filtered.store(bp->filtered.load(std::memory_order_relaxed) + 1,
                         std::memory_order_relaxed);  // one writer, as for hits
      continue;
    }
    vc.hits.add();
    auto suppressions = count_hit(bp, now);
    // The first breakpoint at the address with a handler decides; the others only record.
    // A VCPU already waiting cannot trap again; if a ring says it did, answer it at once
    // rather than lose the held response.
    bool decides = !held && bp->handler() && cfg_.relay && !held_[ev.vcpu];
    if (cfg_.sinks.empty() && !decides)
      continue;
    std::vector<capture_value> values;
    if (!bp->captures().empty())
      values = capture(*bp->captures().specs, ev.regs);
    if (!cfg_.sinks.empty()) {
      records_.push_back(
        {site(ev, bp, {}, process), ev.regs.rip, ev.regs.cr3, now, wall, suppressions, 0});
      if (decides)
        records_.back().captures = values;  // the handler gets them too
      else
        records_.back().captures = std::move(values);
    }
    if (decides) {
      hold(ev, before, bp, std::move(values), process);
      held = true;
    }
  }
}

hit_site event_path::site(const drv::event& ev, const breakpoint_ptr& bp,
                          std::vector<capture_value> captures,
                          std::optional<drv::process_info> process) const {
  return {identity_,         ev.vcpu,    ev.view, ev.mem.gfn,
          ev.mem.offset,     ev.mem.gla, bp,      std::move(captures),
          std::move(process)};
}

std::optional<drv::process_info> event_path::process_at(const drv::event& ev) {
  if (!cfg_.kernel || !cfg_.kernel->reads_processes)
    return std::nullopt;
  drv::page_walker walker{*cfg_.session};
  auto p = drv::process_at(walker, ev.regs, *cfg_.kernel);
  if (!p) {
    cfg_.domain->counters().process_failures.add();
    return std::nullopt;
  }
  return std::move(*p);
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

uint64_t event_path::keep(const drv::event& ev, const vcpu_logic& before) {
  auto token = next_token_++;
  held_[ev.vcpu] = held_response{ev, before, out_.back(), token};
  out_.pop_back();
  return token;
}

void event_path::hold_for_walk(const drv::event& ev, const vcpu_logic& before) {
  if (!cfg_.registry)
    return;
  table_write w{before.written_table(), ev.regs.cr3, (ev.regs.cs.sel & 3) == 0, ev.vcpu, 0, {}};
  // A VCPU waiting already cannot have stepped; if a ring says it did, answer at once rather
  // than lose the held response, and walk all the same.
  if (!held_[ev.vcpu]) {
    w.token = keep(ev, before);
    w.path = weak_from_this();
  }
  caf::anon_send(cfg_.registry, walk_atom_v, std::move(w));
}

void event_path::hold(const drv::event& ev, const vcpu_logic& before, const breakpoint_ptr& bp,
                      std::vector<capture_value> captures,
                      std::optional<drv::process_info> process) {
  auto token = keep(ev, before);
  // The relay sets the deadline.
  handler_hit hit{site(ev, bp, std::move(captures), std::move(process)), ev.regs, {}};
  caf::anon_send(cfg_.relay, hit_atom_v,
                 handler_call{bp->handler(), std::move(hit), token, weak_from_this()});
}

void event_path::decided(drv::vcpu_id vcpu, uint64_t token, std::optional<handler_decision> d) {
  post_([self = weak_from_this(), vcpu, token, d = std::move(d)]() mutable {
    if (auto path = self.lock())
      path->resolve(vcpu, token, std::move(d));
  });
}

void event_path::resolve(drv::vcpu_id vcpu, uint64_t token, std::optional<handler_decision> d) {
  if (released_ || vcpu >= held_.size() || !held_[vcpu] || held_[vcpu]->token != token)
    return;
  auto& h = *held_[vcpu];
  auto rsp = h.response;
  if (d && d->registers) {
    if (d->registers->rip != h.event.regs.rip) {
      lanes_[vcpu] = h.before;  // the trapped instruction is not run: no step-over
      rsp = lanes_[vcpu].redirect(h.event, *d->registers);
      cfg_.domain->counters().vcpus[vcpu].stepping.store(lanes_[vcpu].stepping(),
                                                         std::memory_order_relaxed);
    } else {
      rsp.flags |= drv::flag::set_registers;
      rsp.regs = *d->registers;
      rsp.regs.cr3 = h.event.regs.cr3;
    }
  }
  held_[vcpu].reset();
  give_one(rsp);
}

void event_path::release_held() {
  for (auto& h : held_)
    if (h) {
      auto rsp = h->response;
      h.reset();
      give_one(rsp);
    }
  released_ = true;
}

void event_path::give_one(const drv::response& rsp) {
  out_.clear();
  out_.push_back(rsp);
  count_failures(cfg_.ring->give(out_));
  out_.clear();
}

void event_path::count_failures(const drv::give_result& r) {
  if (r.failed > 0)
    log_refusal(r.first, r.failed);
}

void event_path::log_refusal(const caf::error& err, size_t refused) {
  if (code_of(err) == ec::domain_dead)
    return;  // a dead domain's VCPUs are gone with it: nothing waits for these answers
  cfg_.domain->counters().respond_failures.add(refused);
  if (refusals_log_.allow())
    spdlog::error(
      "domain {} ({}): the hypervisor refused {} response(s), a VCPU may stay "
      "paused: {} (the ring retries; refused responses are counted in "
      "vmitap_respond_failures_total){}",
      identity_->name, identity_->id, refused, render(err), refusals_log_.note());
}

}  // namespace vmitap
