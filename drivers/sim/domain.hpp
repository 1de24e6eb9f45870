#pragma once

// One simulated domain with altp2m, mem_access and singlestep semantics as Xen 4.17 has them.
// It executes each VCPU's workload instruction by instruction, checks every fetch and data
// access against the VCPU's current view, raises requests that pause the VCPU until they are
// answered, and keeps the ground truth tests compare against.
//
// The implementation is split by concern: ept.cpp (views and access), execution.cpp (VCPUs
// running the workload), delivery.cpp (sessions, requests out, responses in, pause),
// ground_truth.cpp (what ran where; invariants), faults.cpp (fault injection), guest.cpp (guest
// memory and page tables), calls.cpp (calling conventions: arguments, strings, stack) and
// module.cpp (the loadable module: VCPU 0 pages it in and out, VCPUs enter and leave it, the
// hardware's accessed-bit writes on the way to its code).

#include "drivers/driver.hpp"
#include "drivers/guest/guest_abi.hpp"
#include "drivers/sim/guest.hpp"
#include "drivers/sim/latency.hpp"
#include "drivers/sim/program.hpp"
#include "drivers/sim/runner.hpp"

#include <pthread.h>
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

namespace vmitap::sim {

struct domain_config {
  std::string name = "guest";
  uint32_t vcpus = 2;
  uint64_t memory_mib = 64;
  uint64_t instructions_per_vcpu = 0;                    ///< 0: run until the domain is destroyed
  drv::page_access code_access = drv::page_access::rwx;  ///< host-p2m access of code pages
  workload_config workload;
  /// Where callers put arguments (and so where a tool finds them at a function's entry).
  drv::calling_convention abi = drv::calling_convention::sysv;
  uint32_t processes = 2;     ///< address spaces (1..64); VCPU i runs in process i % processes
  bool record_calls = false;  ///< log every call's arguments (memory grows with each call)
  /// With a module (workload.module_functions): VCPU 0's top-level calls from one module
  /// transition (load or unload) to the next. At least 1.
  uint32_t module_interval = 64;
};

/// A guest as `cfg` builds it: its code, its memory and page tables, its kernel.
struct prepared_guest {
  program code;
  guest_image guest;
};
/// Fails (ec::invalid_argument) if the workload or the guest's pages do not fit its memory.
caf::expected<prepared_guest> prepare_guest(const domain_config& cfg);

enum class malformed_kind : uint8_t {
  bad_version,        ///< the VCPU pauses on a request with a wrong interface version
  unknown_reason,     ///< the VCPU pauses on a request with a reason vmitap does not know
  vcpu_out_of_range,  ///< a request naming a VCPU the domain does not have
};

/// What the sim knows about a domain that the engine must have kept true. Every request
/// raised ends exactly one way: answered, answered by detach, or dropped by the domain's death.
struct invariants {
  uint64_t requests_raised = 0;     ///< including malformed and out-of-range ones
  uint64_t requests_answered = 0;   ///< answered through the session's ring
  uint64_t answered_by_detach = 0;  ///< left unanswered until detach answered them
  uint64_t dropped_by_death = 0;    ///< outstanding when the domain died
  uint64_t unanswered = 0;          ///< outstanding right now
  uint64_t paused_vcpus = 0;        ///< VCPUs that cannot run right now
  uint64_t pages_changed = 0;       ///< host-p2m pages differing from attach time, plus
                                    ///< pages a destroyed view still had changed
  uint64_t views_left = 0;          ///< views a session created and left to its detach (Xen
                                    ///< keeps them: only the monitor destroys them)
  uint64_t responses_rejected = 0;  ///< answers to VCPUs waiting for none
  uint64_t responses_dropped = 0;   ///< bad version: ignored, as Xen does
  bool holds() const {
    return unanswered == 0 && paused_vcpus == 0 && pages_changed == 0 && views_left == 0 &&
           requests_raised == requests_answered + answered_by_detach + dropped_by_death;
  }
};

/// What the module loader did and what the guest's hardware did on the way to module code
/// (ground truth for a monitor that follows the module's page tables).
struct module_truth {
  uint64_t loads = 0;               ///< loads completed (the module callable from then on)
  uint64_t unloads = 0;             ///< unloads completed (the module absent from then on)
  uint64_t pte_stores = 0;          ///< the loader's page-table stores retired
  uint64_t table_write_traps = 0;   ///< requests raised for a store the view denied W
  uint64_t accessed_bit_traps = 0;  ///< requests raised for an accessed-bit write (in_page_walk)
  uint64_t accessed_bits_set = 0;   ///< accessed bits the walks set in module PTEs
  /// Summed over the unloads, at the moment each completed: module pages whose access in an
  /// active view lacked X (the host p2m's counts only where it differs from the domain's
  /// code_access). A monitor that follows the module has disarmed every one by then: 0.
  uint64_t pages_monitored_while_absent = 0;
  /// Module instructions retired while the module was absent or their page's PTE was not
  /// present: what the loader's ordering rules out. Always 0.
  uint64_t executed_while_absent = 0;
  uint64_t module_instructions = 0;  ///< module instructions retired, over every VCPU
};

/// Driver calls the domain has served, by kind (what a benchmark counts as driver calls).
struct call_counts {
  uint64_t get_access = 0;
  uint64_t set_access = 0;
  uint64_t views = 0;  ///< create, destroy, switch
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

/// Where a domain sends the requests it raises (the sim driver's ring, or a fake Xen).
using request_sink = std::function<void(const drv::event&)>;

/// What running one slice of a VCPU came to; the runner decides what to queue next.
struct slice_result {
  enum kind_t : uint8_t { blocked, yielded, not_due } kind = blocked;
  sim_clock::time_point due{};  ///< not_due: run again then
};

class domain : public std::enable_shared_from_this<domain> {
public:
  /// Use `hypervisor::create_domain`; fails if the workload does not fit the memory.
  static caf::expected<std::shared_ptr<domain>> make(hypervisor& hv, drv::domain_id id,
                                                     domain_config cfg);
  /// Why `make` would fail for `cfg` (the workload or the guest's pages do not fit), if it
  /// would; the message does not name the domain.
  static caf::error validate(const domain_config& cfg);

  drv::domain_info info() const;
  const program& code() const { return program_; }
  /// Page tables, stacks, string buffers and signatures, as laid out at creation.
  const guest_layout& layout() const { return layout_; }
  const domain_config& config() const { return cfg_; }
  drv::domain_state state() const { return state_.load(); }
  drv::domain_id id() const { return id_; }

  // --- a session's operations (what xc_* calls do). `session` is the attach serial: calls
  // from a session that ended, or was replaced by a newer attach, fail with not_attached.
  caf::expected<uint64_t> attach();
  caf::error detach(uint64_t session);
  caf::expected<drv::view_id> create_view(uint64_t session, drv::page_access default_access);
  caf::error destroy_view(uint64_t session, drv::view_id view);
  caf::error switch_all(uint64_t session, drv::view_id view);
  caf::error get_access(uint64_t session, drv::view_id view, std::span<const drv::gfn_t> gfns,
                        std::span<drv::page_access> out);
  caf::error set_access(uint64_t session, drv::view_id view,
                        std::span<const drv::access_change> changes);
  caf::error set_singlestep(uint64_t session, drv::vcpu_id vcpu, bool on);
  /// Requests go to `sink` (on a guest thread) from now on.
  caf::error start_events(uint64_t session, request_sink sink);
  caf::error respond(uint64_t session, const drv::response& rsp);
  caf::error read_physical(uint64_t session, uint64_t pa, std::span<std::byte> out);
  /// Where a fake Xen maps page `gfn` from to share it live (the memory file and the offset),
  /// if the guest writes it at run time; other pages never change and may be copied.
  std::optional<std::pair<int, uint64_t>> shared_page(drv::gfn_t gfn) const {
    if (!memory_.holds(gfn))
      return std::nullopt;
    return std::pair{memory_.fd(), memory_.file_offset(gfn)};
  }
  caf::error pause(uint64_t session);
  caf::error resume(uint64_t session);

  // --- ground truth and invariants (tests and the demo's verification) ------------------
  /// How often instruction `pa` retired having been reached in `view` (by `vcpu`).
  uint64_t executions(uint64_t pa, drv::view_id view);
  uint64_t executions(drv::vcpu_id vcpu, uint64_t pa, drv::view_id view);
  /// Executions plus VCPUs that reached `pa` in `view` and have not retired it yet (they
  /// trapped there and may be answered already), plus times a monitor moved rip away from
  /// it before it ran: what an exact breakpoint has hit by now.
  uint64_t reached(uint64_t pa, drv::view_id view);
  uint64_t instructions_retired();
  uint64_t vcpu_retired(drv::vcpu_id vcpu);
  invariants check();
  drv::view_id vcpu_view(drv::vcpu_id vcpu);
  /// The process `vcpu` runs now (an index into layout().kernel.processes).
  uint32_t vcpu_process(drv::vcpu_id vcpu);
  /// The registers of `vcpu` as its HVM context has them (rip: the next instruction).
  caf::expected<drv::registers> vcpu_registers(uint64_t session, drv::vcpu_id vcpu);
  bool vcpu_singlestepping(drv::vcpu_id vcpu);
  bool halted();  ///< every VCPU used up its instruction budget
  /// The module can be entered now (it is loaded and not draining).
  bool module_loaded() const { return module_state_.load() == module_state::loaded; }
  /// What the module loader and the walks did so far (read while the guest runs).
  sim::module_truth module_truth();
  call_counts calls();
  /// The calls `vcpu` set up into the function at `entry_pa`, in order (needs record_calls).
  /// Logged when set up, before the VCPU fetches the entry: one trapped there is logged.
  std::vector<call_record> calls(drv::vcpu_id vcpu, uint64_t entry_pa);
  /// A: request raised → response received, over every VCPU.
  latency_histogram response_latency();
  /// B: VCPU due to resume (response + exit latency) → running again.
  latency_histogram resume_lateness();

  // --- fault injection ---------------------------------------------------------------------
  /// The next `calls` set_access calls apply `applied` entries, then fail with `err`.
  void fail_access_changes(uint32_t calls, size_t applied, int err);
  /// After `skip` more get_access calls succeed, the next `calls` fail with `err`.
  void fail_access_reads(uint32_t skip, uint32_t calls, int err);
  /// The VCPU raises a malformed request before its next instruction (out-of-range: now).
  void inject_malformed(drv::vcpu_id vcpu, malformed_kind kind);
  /// The next `calls` set_access calls take `stall` before they do anything (a hypervisor
  /// call that hangs; the guest runs on meanwhile).
  void stall_access_changes(uint32_t calls, std::chrono::nanoseconds stall);
  /// The next `count` answered VCPUs resume only after `delay`.
  void delay_responses(uint32_t count, std::chrono::nanoseconds delay);
  /// Every VCPU reports user mode (user CS and SS, the kernel's GS base put aside in
  /// shadow_gs, as after swapgs) until the domain has been resumed `resumes` times: what a
  /// monitor meets attaching while the guest runs user code under KPTI.
  void in_user_mode_until(uint32_t resumes);
  /// The domain dies: VCPUs stop, requests are dropped, vm_event ops succeed and do nothing.
  void kill();

  /// Runs one slice of `vcpu` on the calling guest thread.
  slice_result run_slice(drv::vcpu_id vcpu);

  domain(hypervisor& hv, drv::domain_id id, domain_config cfg, program code, guest_image guest);
  /// Which guest thread runs each VCPU (the hypervisor decides, once, before any runs).
  void bind(const std::function<runner*(drv::vcpu_id)>& runner_of);

private:
  friend class hypervisor;
  enum class run_state : uint8_t { runnable, waiting, stuck, halted };
  enum class module_state : uint8_t { absent, loaded, draining };
  static constexpr uint32_t unrecorded = ~uint32_t{0};
  struct frame {
    uint32_t return_pc = 0;
    uint32_t bytes = 0;          // the call's stack: arguments, alignment, return address
    uint32_t call = unrecorded;  // its entry in `calls`
  };

  struct vcpu {
    vcpu_handle handle;  // what its guest thread queues
    std::mutex mutex;    // with exec_ shared it owns the fields below; exec_ exclusive does too
    rng random{0};
    uint32_t pc = 0;
    std::vector<frame> stack;
    drv::registers regs;
    // The guest memory it writes at calls (calls.cpp). Its own rng: arguments do not change
    // the path `random` draws.
    const vcpu_layout* home = nullptr;
    rng arg_random{0};
    // The process it runs (its cr3 and its per-CPU area's current thread say the same), and
    // the scheduler's own draws: switching does not change the path `random` draws.
    uint32_t process = 0;
    rng sched_random{0};
    uint32_t string_cursor = 0;  // next free byte of its user string ring
    uint32_t kernel_cursor = 0;  // and of its kernel string page
    std::vector<call_record> calls;
    drv::view_id view = 0;
    bool arrived = false;  // the current instruction was attempted already
    drv::view_id arrival_view = 0;
    bool singlestep = false;
    bool fast_singlestep = false;
    drv::view_id fast_return_view = 0;
    bool emulate_next = false;
    run_state state = run_state::runnable;
    std::optional<malformed_kind> malformed;
    sim_clock::time_point raised_at{};  // the outstanding request's
    sim_clock::time_point resume_at{};  // response + latency model
    bool measure_lateness = false;      // the next slice records resume_at → now
    uint64_t retired = 0;
    std::vector<std::vector<uint64_t>> executions;  // [view][instruction index]
    // Instructions reached but not run: a monitor's SET_REGISTERS moved rip away first.
    std::map<std::pair<drv::view_id, uint32_t>, uint64_t> redirected;
    bool in_module = false;          // counted in module_users_ (module.cpp)
    sim::module_truth module_truth;  // its walks' and module instructions' part
    latency_histogram response_latency;
    latency_histogram lateness;

    // Between threads, without the mutex:
    std::atomic<bool> queued{false};        // handed to its guest thread, or running there
    std::atomic<bool> outstanding{false};   // a request waits for its answer (taken once)
    std::atomic<bool> has_response{false};  // an answer waits for the guest thread to apply it
    // Written by the responder before has_response is set; read by the guest thread after.
    drv::response response;
    sim_clock::time_point answered_at{};
    sim_clock::time_point response_due{};
    uint64_t response_session = 0;
  };

  // The module loader: VCPU 0's, owned as VCPU 0's fields are.
  enum class loader_phase : uint8_t {
    idle,        // counting top-level calls to the next transition
    draining,    // unloading: waits until no VCPU is in the module
    storing,     // stores the module's PTEs, one per step (rip: layout_.loader_store_pa)
    completing,  // the last store retired: the transition completes at the next step
  };
  struct module_loader {
    loader_phase phase = loader_phase::idle;
    bool loading = false;     // storing, completing: a load (else an unload)
    uint32_t calls = 0;       // top-level calls since the last transition
    uint32_t next = 0;        // the module page whose PTE it stores next
    sim::module_truth truth;  // loads, unloads, stores, their traps
  };

  struct view_table {
    bool active = false;
    bool created_by_session = false;
    std::unordered_map<drv::gfn_t, drv::page_access> entries;  // explicit; others copy the host
  };

  // ept.cpp
  drv::page_access access_in(drv::view_id view, drv::gfn_t gfn) const;
  drv::page_access host_access(drv::gfn_t gfn) const;
  bool valid_view(drv::view_id view) const { return view < drv::max_views && views_[view].active; }
  uint64_t pages_changed_locked() const;
  // execution.cpp
  std::optional<drv::event> step(vcpu& v);
  drv::event make_event(const vcpu& v, drv::event_reason reason) const;
  void retire(vcpu& v, const instruction& in);
  /// Between two top-level calls, the VCPU may switch to another process (cr3 and current
  /// thread together).
  void schedule(vcpu& v);
  /// What `v` runs next: its program instruction's address, or the loader's store.
  uint64_t next_pa(const vcpu& v) const {
    return v.handle.id == 0 && loader_.phase == loader_phase::storing ? layout_.loader_store_pa
                                                                      : program_.at(v.pc).pa;
  }
  /// A mem_access request for `attempted` at `pa` (guest linear address `gla`).
  drv::event access_fault(const vcpu& v, uint64_t pa, drv::page_access attempted,
                          uint64_t gla) const;
  /// After an instruction (or a loader store) retired: fast singlestep returns to its view,
  /// singlestep raises its request.
  std::optional<drv::event> after_retire(vcpu& v);
  /// The next top-level call, as the thread's loop makes it.
  void start_root(vcpu& v);
  // module.cpp
  /// A top-level function: a module function the module cannot take now is drawn again.
  uint32_t pick_root(vcpu& v);
  /// Counts `v` in the module if it may be entered now; false (and not counted) if not.
  bool enter_module(vcpu& v);
  /// After `v`'s pc or stack changed: in the module while its pc or a return address is
  /// module code.
  void recount_module_user(vcpu& v);
  void leave_module(vcpu& v);
  /// VCPU 0 between two top-level calls (outside the module): starts a transition, or goes on
  /// with an unload. True if it stores now (the next top-level call waits until it is done).
  bool loader_boundary();
  /// The loader's next PTE store, checked as a data write; a request if the view denies it.
  std::optional<drv::event> loader_store(vcpu& v);
  void complete_transition();
  /// Module pages some active view lacks X on (not counting the domain's own code_access).
  uint64_t monitored_module_pages() const;
  /// Before a module instruction's EPT check: the walk sets its PTE's accessed bit, a write
  /// to the page table its view may deny (a request with in_page_walk).
  std::optional<drv::event> walk_to_module_code(vcpu& v, const instruction& in);
  void count_module_instruction(vcpu& v, const instruction& in);
  // calls.cpp
  /// Sets up a call of `function` returning to `return_va`, as its caller would; returns the
  /// stack bytes it took.
  uint32_t enter(vcpu& v, uint32_t function, uint64_t return_va);
  uint64_t argument(vcpu& v, arg_kind kind, call_record* rec, unsigned index);
  uint64_t own_pa(const vcpu& v, uint64_t va) const;
  void write_own(vcpu& v, uint64_t va, std::span<const std::byte> bytes);
  void write_own64(vcpu& v, uint64_t va, uint64_t value);
  // delivery.cpp
  caf::error check_session(uint64_t session, const char* call) const;
  void apply_response(vcpu& v);
  /// SET_REGISTERS: a new rip that is the current call's return address returns from it.
  void set_registers(vcpu& v, const drv::registers& regs);
  /// Applies every answer given and not applied yet (under exec_ exclusive): a control
  /// operation sees them in effect, as on Xen, where an answer takes effect at the notify.
  void settle_locked();
  void deliver(const drv::event& ev);
  void wait_for_deliveries() const;
  void wake(vcpu& v);
  void wake_all_runnable();
  void answer_outstanding_locked();
  void die();
  bool ram(drv::gfn_t gfn) const { return gfn <= max_gfn_; }

  hypervisor& hv_;
  drv::domain_id id_;
  domain_config cfg_;
  drv::gfn_t max_gfn_;
  program program_;
  guest_layout layout_;
  guest_memory memory_;
  page_image image_page_;  // the kernel image's first page (read-only)
  std::array<drv::arg_location, max_args> arg_at_entry_{};
  string_pool strings_;
  std::atomic<drv::domain_state> state_{drv::domain_state::running};

  mutable exec_lock exec_;  // shared while VCPUs execute; exclusive to change p2m or pause
  std::array<view_table, drv::max_views> views_;
  std::vector<std::unique_ptr<vcpu>> vcpus_;
  uint32_t pause_count_ = 0;
  std::atomic<uint64_t> session_{0};  // the attached session's serial; 0: none
  uint64_t last_session_ = 0;
  request_sink sink_;
  bool events_started_ = false;
  mutable std::atomic<int> deliveries_in_flight_{0};
  std::unordered_map<drv::gfn_t, drv::page_access> host_at_attach_;
  uint64_t leftover_view_changes_ = 0;
  uint64_t views_left_ = 0;  // by the last session, at its detach
  std::atomic<uint64_t> get_calls_{0}, set_calls_{0}, view_calls_{0};
  std::atomic<uint32_t> halted_vcpus_{0};  // read without a lock: polling it starves nobody

  // The module (module.cpp). Both seq_cst: a VCPU entering adds itself to the users, then
  // reads the state; an unload stores draining, then reads the users. One sees the other.
  std::atomic<module_state> module_state_{module_state::absent};
  std::atomic<uint32_t> module_users_{0};  // VCPUs with module code in their pc or stack
  module_loader loader_;

  // Requests with a VCPU id out of range, bounded as Xen's ring bounds them.
  static constexpr uint32_t ring_slots = 8;
  std::mutex orphan_mutex_;
  uint32_t orphans_outstanding_ = 0;

  // Each raised request ends in exactly one of these (under the VCPU's or the orphan lock).
  std::atomic<uint64_t> requests_raised_{0};
  std::atomic<uint64_t> requests_answered_{0};
  std::atomic<uint64_t> answered_by_detach_{0};
  std::atomic<uint64_t> dropped_by_death_{0};
  std::atomic<uint64_t> responses_rejected_{0};
  std::atomic<uint64_t> responses_dropped_{0};

  // faults.cpp
  std::mutex fault_mutex_;
  uint32_t failing_calls_ = 0;
  size_t failing_applied_ = 0;
  int failing_errno_ = 0;
  uint32_t reads_before_failing_ = 0;
  uint32_t failing_reads_ = 0;
  int failing_read_errno_ = 0;
  std::atomic<uint32_t> delayed_responses_{0};  // read on every answer: no lock unless set
  std::chrono::nanoseconds response_delay_{0};
  uint32_t stalled_changes_ = 0;
  std::atomic<uint32_t> user_mode_resumes_{0};
  std::chrono::nanoseconds change_stall_{0};
};

}  // namespace vmitap::sim
