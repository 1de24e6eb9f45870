#pragma once

// The hot path of one domain: drain its ring, decide each request with that VCPU's logic and
// the newest breakpoint table, answer the whole batch with one notify, count, and hand the
// batch's hit records to the sinks. It runs on the poller thread that owns the ring; nothing
// in it crosses a thread per request.

#include "actors/monitored_domain.hpp"
#include "actors/sinks.hpp"
#include "actors/vcpu_logic.hpp"
#include "drivers/defaults.hpp"

namespace vmitap {

struct event_path_config {
  domain_ptr domain;
  std::shared_ptr<drv::domain_session> session;  ///< kept alive as long as its ring is drained
  drv::event_ring* ring = nullptr;
  step_mode mode = step_mode::fast;
  std::vector<drv::view_id> homes;  ///< per VCPU: the view it returns to after a step
  std::vector<bool> homing;         ///< per VCPU: not there yet (singlestep sends it)
  std::vector<sink_handle> sinks;
  size_t batch = defaults::ring_batch;
};

class event_path {
public:
  explicit event_path(event_path_config cfg);

  /// Takes up to one batch from the ring, answers and counts it. Returns how many requests.
  size_t drain();
  drv::event_ring& ring() { return *cfg_.ring; }
  monitored_domain& domain() { return *cfg_.domain; }
  /// VCPUs, so a poller pool can spread the load.
  uint32_t weight() const { return uint32_t(lanes_.size()); }

private:
  void decide(const drv::event& ev, std::chrono::steady_clock::time_point now,
              std::chrono::system_clock::time_point wall);
  void count_failures(const drv::give_result& r);
  std::vector<capture_value> capture(const std::vector<capture_spec>& specs,
                                     const drv::registers& regs);

  event_path_config cfg_;
  std::shared_ptr<const domain_identity> identity_;
  std::vector<vcpu_logic> lanes_;
  table_ptr table_;
  std::vector<drv::event> in_;
  std::vector<drv::response> out_;
  std::vector<breakpoint_ptr> hits_;
  hit_batch records_;
  bool failing_ = false;  // in a streak of refused responses (logged once)
};

}  // namespace vmitap
