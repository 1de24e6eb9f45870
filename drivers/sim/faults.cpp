// Fault injection: failing access changes, malformed requests, delayed responses, death.

#include "drivers/sim/hypervisor.hpp"

#include <shared_mutex>

namespace vmitap::sim {

void domain::fail_access_changes(uint32_t calls, size_t applied, int err) {
  std::lock_guard g{fault_mutex_};
  failing_calls_ = calls;
  failing_applied_ = applied;
  failing_errno_ = err;
}

void domain::fail_access_reads(uint32_t skip, uint32_t calls, int err) {
  std::lock_guard g{fault_mutex_};
  reads_before_failing_ = skip;
  failing_reads_ = calls;
  failing_read_errno_ = err;
}

void domain::stall_access_changes(uint32_t calls, std::chrono::nanoseconds stall) {
  std::lock_guard g{fault_mutex_};
  stalled_changes_ = calls;
  change_stall_ = stall;
}

void domain::delay_responses(uint32_t count, std::chrono::nanoseconds delay) {
  std::lock_guard g{fault_mutex_};
  delayed_responses_ = count;
  response_delay_ = delay;
}

void domain::inject_malformed(drv::vcpu_id id, malformed_kind kind) {
  if (kind != malformed_kind::vcpu_out_of_range) {
    auto& v = *vcpus_.at(id);
    std::lock_guard vl{v.mutex};
    std::shared_lock xl{exec_};
    v.malformed = kind;
    return;
  }
  drv::event ev;
  {
    auto& v = *vcpus_.at(id);  // lock order: VCPU, exec_, orphans
    std::lock_guard vl{v.mutex};
    std::shared_lock xl{exec_};
    std::lock_guard g{orphan_mutex_};
    if (!events_started_ || state_ != drv::domain_state::running ||
        orphans_outstanding_ >= ring_slots)
      return;
    ++orphans_outstanding_;
    ++requests_raised_;
    ++deliveries_in_flight_;
    ev = make_event(v, drv::event_reason::mem_access);
    ev.vcpu = uint32_t(vcpus_.size()) + 3;
  }
  deliver(ev);
}

void domain::in_user_mode_until(uint32_t resumes) {
  user_mode_resumes_ = resumes;
}

void domain::kill() {
  hv_.destroy_domain(id_);
}

}  // namespace vmitap::sim
