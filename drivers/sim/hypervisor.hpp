#pragma once

// A simulated Xen host with altp2m, mem_access and singlestep semantics (DESIGN.md §4).
// It executes each VCPU's workload instruction by instruction, checks every fetch and data
// access against the VCPU's current view, raises vm_event-style requests that pause the VCPU
// until answered, and keeps the ground truth tests compare against.
//
// Threads: VCPUs advance inside `respond()` on the caller's thread until their next event or
// the end of a slice; VCPUs that run freely are advanced by one runner thread (or, with
// `threaded = false`, by whoever calls `run_pending()`, for deterministic tests).

#include "drivers/driver.hpp"
#include "drivers/sim/program.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <pthread.h>
#include <thread>
#include <unordered_map>

namespace vmitap::sim {

struct domain_config {
  std::string name = "guest";
  uint32_t vcpus = 2;
  uint64_t memory_mib = 64;
  uint64_t instructions_per_vcpu = 0;  ///< 0: run until the domain is destroyed
  drv::page_access code_access = drv::page_access::rwx;  ///< host-p2m access of code pages
  workload_config workload;
};

struct hypervisor_config {
  bool threaded = true;
  uint32_t slice_instructions = 512;
  /// Latency model: each answered request resumes its VCPU only after this long.
  std::chrono::nanoseconds exit_latency{0};
};

enum class malformed_kind : uint8_t {
  bad_version,    ///< the VCPU pauses on a request with a wrong interface version
  unknown_reason, ///< the VCPU pauses on a request with a reason vmitap does not know
  vcpu_out_of_range, ///< a request naming a VCPU the domain does not have
};

/// What the sim knows about a domain that the engine must have kept true.
struct invariants {
  uint64_t requests_raised = 0;     ///< including malformed and out-of-range ones
  uint64_t requests_answered = 0;   ///< answered by the session's responder
  uint64_t answered_by_detach = 0;  ///< left unanswered until detach answered them
  uint64_t unanswered = 0;          ///< outstanding right now
  uint64_t paused_vcpus = 0;        ///< VCPUs that cannot run right now
  uint64_t pages_changed = 0;       ///< host-p2m pages differing from attach time, plus
                                    ///< pages a destroyed view still had changed
  uint64_t responses_rejected = 0;  ///< answers to VCPUs waiting for none
  uint64_t responses_dropped = 0;   ///< bad version: ignored, as Xen does
  uint64_t dropped_by_death = 0;    ///< outstanding when the domain died
  bool holds() const {
    return unanswered == 0 && paused_vcpus == 0 && pages_changed == 0
           && requests_raised == requests_answered + answered_by_detach + dropped_by_death;
  }
};

/// A reader/writer lock that prefers writers: access changes and pauses are never starved by
/// VCPUs that keep executing.
class exec_lock {
public:
  exec_lock();
  ~exec_lock();
  exec_lock(const exec_lock&) = delete;
  exec_lock& operator=(const exec_lock&) = delete;
  void lock() { pthread_rwlock_wrlock(&lock_); }
  void unlock() { pthread_rwlock_unlock(&lock_); }
  void lock_shared() { pthread_rwlock_rdlock(&lock_); }
  void unlock_shared() { pthread_rwlock_unlock(&lock_); }

private:
  pthread_rwlock_t lock_;
};

class hypervisor;

/// One simulated domain. Public members are the driver's (sim_session's) and the tests'.
class domain : public std::enable_shared_from_this<domain> {
public:
  static constexpr drv::view_id max_views = 10;  // Xen's MAX_ALTP2M
  static constexpr uint32_t ring_slots = 8;       // bound on out-of-range requests in flight

  domain(hypervisor& hv, drv::domain_id id, domain_config cfg);

  drv::domain_info info() const;
  const program& code() const { return program_; }
  const domain_config& config() const { return cfg_; }

  // --- driver operations (what xc_* calls do) -------------------------------------------
  caf::error attach();
  caf::error detach();
  caf::expected<drv::view_id> create_view(drv::page_access default_access);
  caf::error destroy_view(drv::view_id view);
  caf::error switch_all(drv::view_id view);
  caf::expected<drv::page_access> get_access(drv::view_id view, drv::gfn_t gfn);
  caf::error set_access(drv::view_id view, std::span<const drv::access_change> changes);
  caf::error start_events(drv::event_handlers handlers);
  caf::error respond(const drv::response& rsp);
  caf::error read_physical(uint64_t pa, std::span<std::byte> out);
  caf::error pause();
  caf::error resume();

  // --- ground truth and invariants --------------------------------------------------------
  /// How often instruction `pa` retired having been reached in `view`.
  uint64_t executions(uint64_t pa, drv::view_id view);
  /// Executions plus VCPUs that reached `pa` in `view` and have not retired it yet (they
  /// trapped there and may be answered already): what an exact breakpoint has hit by now.
  /// Read under one lock, so it holds while the guest runs.
  uint64_t reached(uint64_t pa, drv::view_id view);
  /// The same, for every instruction and view at once: (pa, view) → count, nonzero only.
  std::map<std::pair<uint64_t, drv::view_id>, uint64_t> all_executions();
  uint64_t instructions_retired();
  uint64_t vcpu_retired(drv::vcpu_id vcpu);
  invariants check();
  drv::view_id vcpu_view(drv::vcpu_id vcpu);
  bool vcpu_singlestepping(drv::vcpu_id vcpu);
  bool halted();  ///< every VCPU used up its instruction budget

  // --- fault injection --------------------------------------------------------------------
  /// The next `calls` set_access calls apply `applied` entries, then fail with `err`.
  void fail_access_changes(uint32_t calls, size_t applied, int err);
  /// The VCPU raises a malformed request before its next instruction (out-of-range: now).
  void inject_malformed(drv::vcpu_id vcpu, malformed_kind kind);
  /// The next `count` answered VCPUs resume only after `delay`.
  void delay_responses(uint32_t count, std::chrono::nanoseconds delay);
  /// The domain dies: VCPUs stop, requests are dropped, vm_event ops succeed and do nothing.
  void kill();

  drv::domain_state state() const { return state_.load(); }
  drv::domain_id id() const { return id_; }

  /// Runs one slice of `vcpu` (runner thread or respond()); delivers an event if one is raised.
  void run_slice(drv::vcpu_id vcpu);

private:
  friend class hypervisor;
  enum class run_state : uint8_t { runnable, waiting, stuck, halted };

  struct vcpu {
    std::mutex mutex;  // with exec_ shared: owns the fields below (exec_ exclusive also does)
    drv::vcpu_id id = 0;
    rng random{0};
    uint32_t pc = 0;
    std::vector<uint32_t> stack;
    drv::registers regs;
    drv::view_id view = 0;
    bool arrived = false;  // the current instruction was attempted already
    drv::view_id arrival_view = 0;
    bool singlestep = false;
    bool fast_singlestep = false;
    drv::view_id fast_return_view = 0;
    bool emulate_next = false;
    run_state state = run_state::runnable;
    std::optional<malformed_kind> malformed;
    std::chrono::steady_clock::time_point resume_at{};
    uint64_t retired = 0;
    std::vector<std::vector<uint64_t>> executions;  // [view][instruction index]
    std::atomic<bool> queued{false};
  };

  struct view_table {
    bool active = false;
    bool created_by_session = false;
    drv::page_access default_access = drv::page_access::rwx;
    std::unordered_map<drv::gfn_t, drv::page_access> entries;  // explicit; others copy the host p2m
  };

  drv::page_access access_in(drv::view_id view, drv::gfn_t gfn) const;
  drv::page_access host_access(drv::gfn_t gfn) const;
  std::optional<drv::event> step(vcpu& v);
  drv::event make_event(const vcpu& v, drv::event_reason reason) const;
  void retire(vcpu& v, const instruction& in);
  void deliver(const drv::event& ev, bool orphan);
  void wait_for_deliveries();
  void requeue_runnable();
  caf::error check_alive(const char* call) const;
  bool ram(drv::gfn_t gfn) const { return gfn <= max_gfn_; }
  void answer_outstanding_locked();

  hypervisor& hv_;
  drv::domain_id id_;
  domain_config cfg_;
  drv::gfn_t max_gfn_;
  program program_;
  std::atomic<drv::domain_state> state_{drv::domain_state::running};

  mutable exec_lock exec_;  // shared while VCPUs execute; exclusive to change p2m or pause
  std::array<view_table, max_views> views_;
  std::vector<std::unique_ptr<vcpu>> vcpus_;
  uint32_t pause_count_ = 0;
  bool attached_ = false;
  drv::event_handlers handlers_;
  bool events_started_ = false;
  std::atomic<int> deliveries_in_flight_{0};
  std::unordered_map<drv::gfn_t, drv::page_access> host_at_attach_;
  uint32_t orphans_outstanding_ = 0;  // guarded by orphan_mutex_
  std::mutex orphan_mutex_;

  // counters (exec_ exclusive or the VCPU's mutex + exec_ shared; atomics where shared)
  std::atomic<uint64_t> requests_raised_{0};
  std::atomic<uint64_t> requests_answered_{0};
  std::atomic<uint64_t> answered_by_detach_{0};
  std::atomic<uint64_t> responses_rejected_{0};
  std::atomic<uint64_t> responses_dropped_{0};
  uint64_t leftover_view_changes_ = 0;
  uint64_t dropped_by_death_ = 0;

  // faults
  std::mutex fault_mutex_;
  uint32_t failing_calls_ = 0;
  size_t failing_applied_ = 0;
  int failing_errno_ = 0;
  uint32_t delayed_responses_ = 0;
  std::chrono::nanoseconds response_delay_{0};
};

/// The simulated host: domains, the runner, and the watch callbacks.
class hypervisor {
public:
  explicit hypervisor(hypervisor_config cfg = {});
  ~hypervisor();
  hypervisor(const hypervisor&) = delete;
  hypervisor& operator=(const hypervisor&) = delete;

  /// Creates and starts a domain; watchers hear of it.
  std::shared_ptr<domain> create_domain(domain_config cfg);
  /// Destroys a domain (as `xl destroy` would); watchers hear of it.
  void destroy_domain(drv::domain_id id);
  std::shared_ptr<domain> find(drv::domain_id id) const;
  std::vector<std::shared_ptr<domain>> domains() const;

  uint64_t add_watch(std::function<void(const drv::domain_change&)> fn);
  void remove_watch(uint64_t token);

  /// Manual mode: runs queued VCPU slices on this thread until none is queued or
  /// `max_slices` ran. Returns how many ran.
  size_t run_pending(size_t max_slices = SIZE_MAX);

  const hypervisor_config& config() const { return cfg_; }

private:
  friend class domain;
  void enqueue(std::shared_ptr<domain> d, drv::vcpu_id vcpu,
               std::chrono::steady_clock::time_point at = {});
  void notify(const drv::domain_change& change);
  void runner_loop();
  bool pop(std::pair<std::weak_ptr<domain>, drv::vcpu_id>& out, bool wait);

  hypervisor_config cfg_;
  mutable std::mutex domains_mutex_;
  std::map<drv::domain_id, std::shared_ptr<domain>> domains_;
  drv::domain_id next_id_ = 1;

  std::mutex watch_mutex_;  // held while callbacks run, so remove_watch waits for them
  std::map<uint64_t, std::function<void(const drv::domain_change&)>> watches_;
  uint64_t next_watch_ = 1;

  std::mutex queue_mutex_;
  std::condition_variable queue_cv_;
  std::deque<std::pair<std::weak_ptr<domain>, drv::vcpu_id>> ready_;
  std::multimap<std::chrono::steady_clock::time_point,
                std::pair<std::weak_ptr<domain>, drv::vcpu_id>> timed_;
  bool stopping_ = false;
  std::thread runner_;
};

}  // namespace vmitap::sim
