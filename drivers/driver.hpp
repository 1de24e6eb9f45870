#pragma once

// The hypervisor port: everything vmitap asks of a hypervisor, one interface for every backend
// (drivers/sim, drivers/xen). A driver lists and watches domains and attaches sessions; a
// session changes views and page access, and hands out the domain's event ring, which exactly
// one poller thread drains and answers.

#include "drivers/vm_event.hpp"

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include <chrono>

#include <cstddef>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace vmitap::drv {

enum class domain_state : uint8_t { running, paused, dying, dead };
const char* to_string(domain_state s);

struct domain_info {
  domain_id id = 0;
  std::string name;
  uint32_t vcpus = 0;
  domain_state state = domain_state::running;
  gfn_t max_gfn = 0;  ///< guest RAM spans gfn [0, max_gfn]
};

struct domain_change {
  domain_info domain;
  bool started = false;  ///< false: the domain stopped (died or was destroyed)
};

/// What happened to a batch of responses: how many could not be delivered, and why the first.
struct give_result {
  size_t failed = 0;
  caf::error first;
};

/// What `arm()` found before the poller sleeps.
struct arm_result {
  bool pending = false;  ///< requests wait already: take them instead of sleeping
  /// Answers are in the ring but the hypervisor was not told (a notify failed): the ring
  /// retries by then, so the poller sleeps at most this long. Negative: no limit.
  std::chrono::milliseconds retry_in{-1};
  caf::error refused;  ///< a notify owed from before, retried now, failed again
};

/// A domain's event channel as its poller sees it: requests in, responses out. On Xen it is
/// the domain's one vm_event ring; on the simulated hypervisor an equivalent queue.
///
/// Not thread-safe: one thread, the poller that owns the ring, calls every function. Other
/// threads hand their responses to that poller.
class event_ring {
public:
  virtual ~event_ring() = default;

  /// Copies up to `out.size()` pending requests out of the ring and consumes them. Never
  /// blocks. Requests are returned as the hypervisor wrote them: validating them is the
  /// caller's job (a malformed one must be answered too).
  virtual size_t take(std::span<event> out) = 0;
  /// Writes `rsps` (in any order) and notifies the hypervisor once.
  virtual give_result give(std::span<const response> rsps) = 0;
  /// A descriptor that becomes readable when requests arrive after `arm()` returned true.
  virtual int fd() const = 0;
  /// Before sleeping on `fd()`: asks to be woken, and retries a notify still owed. A ring
  /// that owes one must be armed again within `retry_in`: the VCPUs waiting for those
  /// answers cannot raise the request that would wake the poller.
  virtual arm_result arm() = 0;
  /// After `fd()` was readable: consumes the notification.
  virtual void acknowledge() = 0;
  /// On every drain, busy or not: retries a notify the ring owes once its backoff has passed
  /// (a poller kept busy by other rings may not sleep for long). Returns its error, if any.
  virtual caf::error retry_owed() { return {}; }
};

/// A monitoring session on one domain. Its identity is the session: once it has detached (or
/// a newer session attached the domain), none of its calls reaches the domain any more.
/// Views, access and memory may be called from any thread; the ring belongs to one poller.
class domain_session {
public:
  virtual ~domain_session() = default;

  virtual domain_info info() const = 0;

  // Views (altp2m). View 0 is the host p2m; it cannot be destroyed.
  virtual caf::expected<view_id> create_view(page_access default_access) = 0;
  virtual caf::error destroy_view(view_id view) = 0;
  /// Moves every VCPU to `view` (Xen pauses the domain for it).
  virtual caf::error switch_all(view_id view) = 0;
  /// Reads the access of many gfns in `view` into `out` (one port call; Xen has no batched
  /// read, so its driver makes one hypercall per gfn).
  virtual caf::error get_access(view_id view, std::span<const gfn_t> gfns,
                                std::span<page_access> out) = 0;
  /// One batched call for many gfns (xc_altp2m_set_mem_access_multi). On failure a prefix
  /// of `changes` may have been applied; the caller reads back to learn which.
  virtual caf::error set_access(view_id view, std::span<const access_change> changes) = 0;
  /// Turns singlestepping of one VCPU on or off (a SINGLESTEP request follows the next
  /// instruction while it is on).
  virtual caf::error set_singlestep(vcpu_id vcpu, bool on) = 0;

  // Events.
  /// Starts delivery and returns the ring; it lives as long as the session.
  virtual caf::expected<event_ring*> start_events() = 0;

  // Memory and execution.
  virtual caf::error read_physical(uint64_t pa, std::span<std::byte> out) = 0;
  /// A VCPU's registers outside an event (Xen: its HVM CPU context): what attach reads to
  /// find the kernel, with the domain paused.
  virtual caf::expected<registers> vcpu_registers(vcpu_id vcpu) = 0;
  /// Pauses every VCPU; when it returns, every request raised so far is in the ring.
  virtual caf::error pause() = 0;
  virtual caf::error resume() = 0;

  /// Ordered teardown: pause, answer what is unanswered, singlestep off, all VCPUs to view 0,
  /// destroy views, stop events, unpause. Idempotent; safe after the domain died.
  virtual caf::error detach() = 0;
};

/// What the running hypervisor can be relied on for.
struct capabilities {
  /// Fast singlestep keeps its state across the step (Xen >= 4.17.4); otherwise a domain
  /// whose config does not ask for a step mode gets classic step-over.
  bool fast_singlestep = true;
  std::string why;  ///< the reason when it cannot, for the log
};

/// A hypervisor backend.
class driver {
public:
  virtual ~driver() = default;

  virtual std::string name() const = 0;
  virtual capabilities caps() const { return {}; }
  virtual caf::expected<std::vector<domain_info>> list_domains() = 0;
  /// Calls `on_change` for every domain that starts or stops from now on (any thread).
  virtual caf::error watch(std::function<void(const domain_change&)> on_change) = 0;
  /// Stops calling the watch callback; returns once no call is in progress.
  virtual void unwatch() = 0;
  virtual caf::expected<std::unique_ptr<domain_session>> attach(domain_id id) = 0;
};

}  // namespace vmitap::drv
