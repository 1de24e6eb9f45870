#pragma once

// The hot path of one domain: drain its ring, decide each request with that VCPU's logic and
// the newest breakpoint table, answer the whole batch with one notify, count, and hand the
// batch's hit records to the sinks. It runs on the poller thread that owns the ring; nothing
// in it crosses a thread per request. A hit whose breakpoint has a handler is the exception:
// its response is held, the hit goes to the domain's handler relay, and the decision comes
// back through the poller's inbox; only that VCPU waits. A write to a watched page table is
// held the same way, at its SINGLESTEP, until the registry has walked the tables again.

#include "actors/handlers/handler_relay.hpp"
#include "actors/hotpath/hotpath.hpp"
#include "actors/hotpath/vcpu_logic.hpp"
#include "actors/model/log_limit.hpp"
#include "actors/model/monitored_domain.hpp"
#include "actors/records/sinks.hpp"
#include "drivers/defaults.hpp"

#include <functional>
#include <optional>

namespace vmitap {

struct event_path_config {
  domain_ptr domain;
  std::shared_ptr<drv::domain_session> session;  ///< kept alive as long as its ring is drained
  drv::event_ring* ring = nullptr;
  step_mode mode = step_mode::fast;
  std::vector<drv::view_id> homes;  ///< per VCPU: the view it returns to after a step
  std::vector<bool> homing;         ///< per VCPU: not there yet (singlestep sends it)
  std::vector<sink_handle> sinks;
  handler_relay_actor relay;       ///< where held hits go; none: handlers are not called
  registry_notice_actor registry;  ///< told of breakpoints over their rate limit and of page
                                   ///< tables written; none: a table write is answered at once
  /// The domain's kernel, found at attach; none: hits carry no process.
  std::shared_ptr<const drv::kernel_map> kernel;
  size_t batch = defaults::ring_batch;
};

class event_path final : public held_responses, public std::enable_shared_from_this<event_path> {
public:
  explicit event_path(event_path_config cfg);

  /// How work reaches the thread that drains this path (set by the poller that owns it).
  using post_fn = std::function<void(std::function<void()>)>;
  void bind(post_fn post) { post_ = std::move(post); }
  /// Applied on the path's thread; an answer after the VCPU was already resumed (a timeout,
  /// a release) is ignored.
  void decided(drv::vcpu_id vcpu, uint64_t token, std::optional<handler_decision> d) override;
  /// Answers every held response as if it had no handler and ignores later decisions: the
  /// path's last act before its poller lets it go.
  void release_held();

  /// Takes up to one batch from the ring, answers and counts it. Returns how many requests.
  size_t drain();
  /// Before the poller sleeps: arms the ring and counts a retried notify that failed again.
  drv::arm_result arm();
  drv::event_ring& ring() { return *cfg_.ring; }
  monitored_domain& domain() { return *cfg_.domain; }
  /// VCPUs, so a poller pool can spread the load.
  uint32_t weight() const { return uint32_t(lanes_.size()); }

private:
  /// Answers one request (into out_) and counts it.
  void decide(const drv::event& ev, std::chrono::steady_clock::time_point now,
              std::chrono::system_clock::time_point wall);
  /// An accessed-bit update on the way to fetching a breakpoint's instruction: its hit (the
  /// step runs the instruction where nothing traps). True if it was one.
  bool hit_behind_walk(const drv::event& ev, const vcpu_logic& before,
                       std::chrono::steady_clock::time_point now,
                       std::chrono::system_clock::time_point wall);
  /// Counts a request that hit no breakpoint, by its verdict.
  void count(vcpu_logic::verdict v, vcpu_counters& vc);
  /// Every breakpoint in hits_: counted, recorded for the sinks, and the first with a
  /// handler held for it. `before`: the VCPU's lane as it was before the trap.
  void hit(const drv::event& ev, const vcpu_logic& before,
           std::chrono::steady_clock::time_point now, std::chrono::system_clock::time_point wall);
  /// Counts one hit of `bp` against its rate limit; returns its suppressions before it.
  uint64_t count_hit(const breakpoint_ptr& bp, std::chrono::steady_clock::time_point now);
  void hold(const drv::event& ev, const vcpu_logic& before, const breakpoint_ptr& bp,
            std::vector<capture_value> captures, std::optional<drv::process_info> process);
  /// Holds the answer to the SINGLESTEP after a page-table write until the registry has
  /// walked the tables again.
  void hold_for_walk(const drv::event& ev, const vcpu_logic& before);
  /// Keeps the newest response in out_ for `vcpu` until it is decided; returns its token.
  uint64_t keep(const drv::event& ev, const vcpu_logic& before);
  void resolve(drv::vcpu_id vcpu, uint64_t token, std::optional<handler_decision> d);
  void give_one(const drv::response& rsp);
  void count_failures(const drv::give_result& r);
  /// Counts `refused` responses (0: a retry of ones counted already) and logs the cause.
  void log_refusal(const caf::error& err, size_t refused);
  std::vector<capture_value> capture(const std::vector<capture_spec>& specs,
                                     const drv::registers& regs);
  hit_site site(const drv::event& ev, const breakpoint_ptr& bp, std::vector<capture_value> captures,
                std::optional<drv::process_info> process) const;
  /// The process at the hit, if the kernel is known and its structures can be read.
  std::optional<drv::process_info> process_at(const drv::event& ev);

  event_path_config cfg_;
  std::shared_ptr<const domain_identity> identity_;
  std::vector<vcpu_logic> lanes_;
  table_ptr table_;
  std::vector<drv::event> in_;
  std::vector<drv::response> out_;
  std::vector<breakpoint_ptr> hits_;
  hit_batch records_;
  log_limit refusals_log_;

  /// A response waiting for its handler; the lane as it was before the trap, in case the
  /// handler moves rip and the step-over is not to happen.
  struct held_response {
    drv::event event;
    vcpu_logic before;
    drv::response response;
    uint64_t token = 0;
  };
  std::vector<std::optional<held_response>> held_;  // per VCPU: at most one, it is paused
  uint64_t next_token_ = 1;
  bool released_ = false;
  post_fn post_;
};

}  // namespace vmitap
