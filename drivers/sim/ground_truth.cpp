// What ran where, and the invariants a monitor must have kept: read under the exclusive
// lock, so they hold while the guest runs.

#include "drivers/sim/domain.hpp"

namespace vmitap::sim {

uint64_t domain::executions(uint64_t pa, drv::view_id view) {
  uint64_t sum = 0;
  for (drv::vcpu_id v = 0; v < vcpus_.size(); ++v)
    sum += executions(v, pa, view);
  return sum;
}

uint64_t domain::executions(drv::vcpu_id vcpu, uint64_t pa, drv::view_id view) {
  auto index = program_.index_of(pa);
  if (!index || view >= drv::max_views || vcpu >= vcpus_.size())
    return 0;
  std::unique_lock xl{exec_};
  auto& counts = vcpus_[vcpu]->executions[view];
  return counts.empty() ? 0 : counts[*index];
}

uint64_t domain::reached(uint64_t pa, drv::view_id view) {
  auto index = program_.index_of(pa);
  if (!index || view >= drv::max_views)
    return 0;
  std::unique_lock xl{exec_};
  uint64_t n = 0;
  for (auto& v : vcpus_) {
    if (!v->executions[view].empty())
      n += v->executions[view][*index];
    n += v->arrived && v->pc == *index && v->arrival_view == view;
    if (auto r = v->redirected.find({view, *index}); r != v->redirected.end())
      n += r->second;
  }
  return n;
}

uint64_t domain::instructions_retired() {
  std::unique_lock xl{exec_};
  uint64_t sum = 0;
  for (auto& v : vcpus_)
    sum += v->retired;
  return sum;
}

uint64_t domain::vcpu_retired(drv::vcpu_id id) {
  std::unique_lock xl{exec_};
  return vcpus_.at(id)->retired;
}

invariants domain::check() {
  std::unique_lock xl{exec_};
  settle_locked();
  invariants inv;
  inv.requests_raised = requests_raised_;
  inv.requests_answered = requests_answered_;
  inv.answered_by_detach = answered_by_detach_;
  inv.dropped_by_death = dropped_by_death_;
  inv.responses_rejected = responses_rejected_;
  inv.responses_dropped = responses_dropped_;
  inv.pages_changed = leftover_view_changes_;
  inv.views_left = views_left_;
  if (state_ != drv::domain_state::running)
    return inv;  // a dead domain has no VCPUs and no p2m; its requests died with it
  {
    std::lock_guard g{orphan_mutex_};
    inv.unanswered = orphans_outstanding_;
  }
  for (auto& v : vcpus_) {
    bool waits = v->outstanding.load();  // an answer on its way does not leave it paused
    inv.unanswered += waits;
    inv.paused_vcpus += pause_count_ > 0 || waits || v->state == run_state::stuck;
  }
  inv.pages_changed = pages_changed_locked();
  return inv;
}

drv::view_id domain::vcpu_view(drv::vcpu_id id) {
  std::unique_lock xl{exec_};
  settle_locked();
  return vcpus_.at(id)->view;
}

uint32_t domain::vcpu_process(drv::vcpu_id id) {
  auto& v = *vcpus_.at(id);
  std::lock_guard vl{v.mutex};
  return v.process;
}

bool domain::vcpu_singlestepping(drv::vcpu_id id) {
  std::unique_lock xl{exec_};
  settle_locked();
  return vcpus_.at(id)->singlestep;
}

bool domain::halted() {
  return halted_vcpus_.load() == vcpus_.size();
}

call_counts domain::calls() {
  return {get_calls_.load(), set_calls_.load(), view_calls_.load()};
}

std::vector<call_record> domain::calls(drv::vcpu_id id, uint64_t entry_pa) {
  std::unique_lock xl{exec_};
  std::vector<call_record> out;
  for (auto& c : vcpus_.at(id)->calls)
    if (c.entry_pa == entry_pa)
      out.push_back(c);
  return out;
}

latency_histogram domain::response_latency() {
  std::unique_lock xl{exec_};
  latency_histogram sum;
  for (auto& v : vcpus_)
    sum.merge(v->response_latency);
  return sum;
}

latency_histogram domain::resume_lateness() {
  std::unique_lock xl{exec_};
  latency_histogram sum;
  for (auto& v : vcpus_)
    sum.merge(v->lateness);
  return sum;
}

}  // namespace vmitap::sim
