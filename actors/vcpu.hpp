#pragma once

#include "actors/interfaces.hpp"
#include "actors/sinks.hpp"
#include "engine/metrics.hpp"

#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

namespace vmitap {

struct vcpu_config {
  drv::domain_id domain = 0;
  std::shared_ptr<const std::string> domain_name;
  drv::vcpu_id vcpu = 0;
  std::shared_ptr<drv::domain_session> session;
  step_mode mode = step_mode::fast;
  drv::view_id home_view = 0;  ///< the monitored view this VCPU returns to after a step
  std::vector<sink_handle> sinks;
  std::shared_ptr<domain_metrics> metrics;
};

/// Steady-clock nanoseconds: when a request was seen, for vmitap_event_handling_seconds.
inline int64_t seen_now() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
           std::chrono::steady_clock::now().time_since_epoch())
    .count();
}

/// What the VCPU actor decides for one request, without any actor machinery.
class vcpu_logic {
public:
  enum class verdict : uint8_t {
    hit,
    neighbour,
    stale,
    spurious,
    singlestep,
    bad_version,
    unknown_reason,
  };

  explicit vcpu_logic(step_mode mode, drv::view_id home_view)
    : mode_(mode), home_view_(home_view) {}

  /// Decides the response to `ev`. Breakpoints hit are appended to `hits`.
  drv::response decide(const drv::event& ev, const breakpoint_table* table,
                       std::vector<breakpoint_ptr>& hits, verdict& out);

  bool stepping() const { return stepping_; }
  bool singlestep_on() const { return singlestep_on_; }

private:
  void step_over(drv::response& rsp);

  step_mode mode_;
  drv::view_id home_view_;
  bool stepping_ = false;       // classic: waiting for the SINGLESTEP event
  bool singlestep_on_ = false;  // TOGGLE_SINGLESTEP flips: track the VCPU's state
};

struct vcpu_state {
  vcpu_state() = default;  // not an aggregate: CAF would build it from `self`
  static inline const char* name = "vmitap.vcpu";
  vcpu_config cfg;
  vcpu_logic logic{step_mode::fast, 0};
  table_ptr table;
  vcpu_stats stats;
  std::vector<breakpoint_ptr> hits;  // reused per event
};

vcpu_actor::behavior_type vcpu(vcpu_actor::stateful_pointer<vcpu_state> self, vcpu_config cfg);

}  // namespace vmitap
