#pragma once

// Payloads exchanged between vmitap's actors. All messages stay inside one process (they are
// never serialized), so pointer-carrying types are allowed as message types below.

#include "actors/captures.hpp"
#include "drivers/driver.hpp"

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace vmitap {

// Verb atoms (CAF 0.17: at most 10 characters).
using add_atom = caf::atom_constant<caf::atom("add")>;
using remove_atom = caf::atom_constant<caf::atom("remove")>;
using clear_atom = caf::atom_constant<caf::atom("clear")>;
using list_atom = caf::atom_constant<caf::atom("list")>;
using apply_atom = caf::atom_constant<caf::atom("apply")>;
using orphan_atom = caf::atom_constant<caf::atom("orphan")>;
using flush_atom = caf::atom_constant<caf::atom("flush")>;
using create_atom = caf::atom_constant<caf::atom("create")>;
using teardown_atom = caf::atom_constant<caf::atom("teardown")>;
using attach_atom = caf::atom_constant<caf::atom("attach")>;
using detach_atom = caf::atom_constant<caf::atom("detach")>;
using died_atom = caf::atom_constant<caf::atom("died")>;
using status_atom = caf::atom_constant<caf::atom("status")>;
using hit_atom = caf::atom_constant<caf::atom("hit")>;
using started_atom = caf::atom_constant<caf::atom("started")>;
using stopped_atom = caf::atom_constant<caf::atom("stopped")>;
using stop_atom = caf::atom_constant<caf::atom("stop")>;
using ok_atom = caf::atom_constant<caf::atom("ok")>;
using update_atom = caf::atom_constant<caf::atom("update")>;
using reload_atom = caf::atom_constant<caf::atom("reload")>;
using released_atom = caf::atom_constant<caf::atom("released")>;
using reopen_atom = caf::atom_constant<caf::atom("reopen")>;
using tick_atom = caf::atom_constant<caf::atom("tick")>;
using suppress_atom = caf::atom_constant<caf::atom("suppress")>;
using rearm_atom = caf::atom_constant<caf::atom("rearm")>;
using deadline_atom = caf::atom_constant<caf::atom("deadline")>;

enum class step_mode : uint8_t {
  classic,  ///< view 0 + toggle singlestep, back on the SINGLESTEP event: two events a trap
  fast,     ///< view 0 + fast singlestep with return view (Xen >= 4.17.4): one event a trap
  emulate,  ///< EMULATE: the instruction is emulated in place, no view switch: one event a trap
};
const char* to_string(step_mode m);

/// How long a VCPU waits for its breakpoint's handler unless the config says otherwise.
inline constexpr std::chrono::microseconds default_handler_deadline{10'000};

/// Which handler decides a breakpoint's hits, and how long the VCPU may wait for it.
struct handler_binding {
  std::string name;
  std::chrono::microseconds deadline = default_handler_deadline;
  bool operator==(const handler_binding&) const = default;
};

/// A breakpoint's hit-rate limit (DRAKVUF's --traps-ttl against API hammering): above
/// `max_per_second` hits in a second, the breakpoint is disarmed for `cooldown`, then re-armed.
struct rate_limit {
  uint32_t max_per_second = 0;  ///< 0: no limit
  std::chrono::milliseconds cooldown{1000};
  bool operator==(const rate_limit&) const = default;
};

/// The state of one breakpoint's rate limit. Its window is the hot path's (the one poller
/// that owns the domain's ring); a suppression is the registry's.
class rate_limiter {
public:
  explicit rate_limiter(rate_limit limit) : limit_(limit) {}
  const rate_limit& limit() const { return limit_; }
  /// Counts a hit at `now`. True exactly once per suppression: the hit that went over the
  /// limit, while the breakpoint is still armed (ask the registry to disarm it).
  bool over(std::chrono::steady_clock::time_point now);
  /// The registry re-armed the breakpoint: a new window starts at its next hit.
  void rearmed() { suppressing_.store(false, std::memory_order_release); }
  void count_suppression() { suppressions_.fetch_add(1, std::memory_order_relaxed); }
  uint64_t suppressions() const { return suppressions_.load(std::memory_order_relaxed); }

private:
  const rate_limit limit_;
  std::chrono::steady_clock::time_point window_start_{};  // the hot path's
  uint32_t window_hits_ = 0;                              // the hot path's
  std::atomic<bool> suppressing_{false};
  std::atomic<uint64_t> suppressions_{0};
};

/// What a user asks for: a breakpoint at a guest physical address in a view.
struct breakpoint_spec {
  uint64_t pa = 0;
  drv::view_id view = 0;
  std::string name;
  std::vector<std::string> tags;
  capture_list captures;
  std::optional<handler_binding> handler;
  rate_limit limit;
  bool live = false;  ///< armed by a reload, after the session's start: counts from then on
};

using tag_list = std::shared_ptr<const std::vector<std::string>>;

/// What only some breakpoints have, kept out of line so that a plain one stays small.
struct breakpoint_extras {
  tag_list tags;
  capture_list captures;
  std::shared_ptr<const handler_binding> handler;
  std::unique_ptr<rate_limiter> limiter;
};

/// A registered breakpoint. Immutable once published but for its hit count, which the one
/// poller that owns its domain's ring increments (others only read it). Kept small: there
/// may be a hundred thousand (64 bytes, and its extras only if it has any).
struct breakpoint {
  std::string name;
  uint64_t pa = 0;
  mutable std::atomic<uint64_t> hits{0};
  std::unique_ptr<const breakpoint_extras> extras;  ///< none: no tags, captures, handler, limit
  drv::view_id view = 0;
  bool live = false;  ///< armed by a reload, after the session's start: counts from then on

  /// Shared by every breakpoint with the same tags; none: no tags.
  const tag_list& tags() const { return extras ? extras->tags : no_extras.tags; }
  /// Read while the VCPU is paused, into the hit's record.
  const capture_list& captures() const { return extras ? extras->captures : no_extras.captures; }
  /// None: answered at once.
  const std::shared_ptr<const handler_binding>& handler() const {
    return extras ? extras->handler : no_extras.handler;
  }
  /// None: no rate limit.
  rate_limiter* limiter() const { return extras ? extras->limiter.get() : nullptr; }

private:
  static const breakpoint_extras no_extras;
};

using breakpoint_ptr = std::shared_ptr<const breakpoint>;

/// A breakpoint for `spec`, with `tags` (or, if none are given, the spec's own).
breakpoint_ptr make_breakpoint(const breakpoint_spec& spec, tag_list tags = nullptr);

/// The outcome of a batch of breakpoint additions or removals: what failed, and why.
struct batch_result {
  size_t ok = 0;
  std::vector<std::pair<std::string, std::string>> failed;  ///< breakpoint name, reason
  bool domain_gone = false;  ///< a failure was the domain's death, not a fault of the call
  std::vector<breakpoint_ptr> removed;  ///< a removal's breakpoints, with the hits they had
};

/// What to set up in one domain: the engine's plan, resolved to names.
struct domain_plan {
  struct breakpoint {
    std::string name;
    uint64_t pa = 0;
    std::string view;
    std::vector<std::string> tags;
    capture_list captures;
    std::optional<handler_binding> handler;
    rate_limit limit;
    bool operator==(const breakpoint&) const = default;
  };
  std::vector<std::string> views = {"main"};  ///< created in order; the first is the default
  step_mode mode = step_mode::fast;
  bool mode_chosen = false;  ///< the config named the mode (else the driver may advise one)
  std::map<drv::vcpu_id, std::string> vcpu_views;  ///< VCPUs whose home is not the first view
  std::vector<breakpoint> breakpoints;
  /// True if `other` needs no new views or step mode: only breakpoints differ.
  bool same_shape(const domain_plan& other) const {
    return views == other.views && mode == other.mode && mode_chosen == other.mode_chosen
           && vcpu_views == other.vcpu_views;
  }
};

using plan_ptr = std::shared_ptr<const domain_plan>;

/// Who a hit record is about: fixed for a session, shared by all its records.
struct domain_identity {
  drv::domain_id id = 0;
  std::string name;
  std::map<drv::view_id, std::string> view_names;
};

/// Where a breakpoint was hit and what its captures read: what sinks and handlers are both told.
struct hit_site {
  std::shared_ptr<const domain_identity> domain;
  drv::vcpu_id vcpu = 0;
  drv::view_id view = 0;
  drv::gfn_t gfn = 0;
  uint64_t offset = 0;
  uint64_t gla = 0;
  breakpoint_ptr bp;
  std::vector<capture_value> captures;  ///< one per `bp->captures()` entry, in order

  /// The capture named `name` (null if the breakpoint has none by that name).
  const capture_value* capture(std::string_view name) const;
  /// A `value` capture as a number; nothing if it is missing or could not be read.
  std::optional<uint64_t> value(std::string_view name) const;
};

/// One breakpoint hit, as sinks receive it.
struct hit_record : hit_site {
  uint64_t rip = 0;
  uint64_t cr3 = 0;
  std::chrono::steady_clock::time_point at;
  std::chrono::system_clock::time_point wall;
  uint64_t suppressions = 0;  ///< with a rate limit: times it was disarmed before this hit
  uint64_t seq = 0;           ///< its number at its sink, given when offered (sink_handle)
};

using hit_batch = std::vector<hit_record>;

/// Counts of one domain session, summed over its VCPUs.
struct vcpu_stats {
  uint64_t events = 0;
  uint64_t hits = 0;
  uint64_t neighbours = 0;
  uint64_t stale = 0;
  uint64_t spurious = 0;
  uint64_t malformed = 0;
  uint64_t singlesteps = 0;
  uint64_t respond_failures = 0;
  vcpu_stats& operator+=(const vcpu_stats& x);
};

/// What a domain's teardown or status reports.
struct domain_report {
  drv::domain_id id = 0;
  std::string name;
  bool died = false;
  vcpu_stats totals;
  std::vector<breakpoint_ptr> breakpoints;  ///< with their final hit counts
  /// Removed by a reload during the session (armed part of the time), with their hits; one
  /// per name, view and address (a breakpoint removed again adds its hits).
  std::vector<breakpoint_ptr> removed;
  uint64_t access_calls = 0;    ///< batched access-change calls made
  uint64_t access_changes = 0;  ///< pages changed by them
  uint64_t access_failures = 0;
  std::string error;            ///< first teardown error, if any
  uint32_t sessions = 1;        ///< sessions summed up here (see fold)
  bool attached = false;        ///< its attach completed: its plan's breakpoints were armed
};

/// Adds `later`'s counts to `into` (the same domain name, both ended): totals, access calls,
/// each breakpoint's hits by name, view and address (fold_breakpoints), the first error, the
/// newest id. Bounded by breakpoints, however many sessions are folded.
void fold(domain_report& into, const domain_report& later);

/// Adds `bps` to `into` by name, view and address: one entry each, a repeated one a copy with
/// both hit counts. What stays bounded by breakpoints, however often they come and go.
void fold_breakpoints(std::vector<breakpoint_ptr>& into, const std::vector<breakpoint_ptr>& bps);

}  // namespace vmitap

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vmitap::drv::domain_info)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vmitap::drv::page_access)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vmitap::breakpoint_spec)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<vmitap::breakpoint_spec>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vmitap::breakpoint_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<vmitap::breakpoint_ptr>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vmitap::batch_result)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vmitap::hit_batch)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vmitap::vcpu_stats)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vmitap::domain_report)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<vmitap::domain_report>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vmitap::plan_ptr)
