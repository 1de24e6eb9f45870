#pragma once

// A breakpoint, in the one shape it has from the config to the registry (breakpoint_def: its
// options and its target, built once by the config reader), and as the registry arms it
// (breakpoint: the same, resolved to a view, with its hit count and rate limiter).

#include "actors/model/captures.hpp"
#include "actors/model/model.hpp"

#include <atomic>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace vmitap {

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

/// Where a breakpoint traps (the instruction's first byte), as the config names it: a
/// guest-physical address, a kernel virtual address, or a kernel symbol plus an offset. The
/// registry arms physical addresses: a virtual one or a symbol is resolved at attach (the
/// supervisor fills `pa` through the domain's kernel page tables).
struct breakpoint_target {
  enum class kind : uint8_t { physical, virtual_address, symbol };
  kind by = kind::physical;
  uint64_t pa = 0;      ///< configured (physical) or resolved
  uint64_t va = 0;      ///< virtual_address: configured; symbol: resolved
  std::string symbol;   ///< symbol: its name in the domain's profile
  uint64_t offset = 0;  ///< symbol: bytes past its address
  bool operator==(const breakpoint_target&) const = default;
  static breakpoint_target physical(uint64_t pa) { return {kind::physical, pa, 0, {}, 0}; }
  /// "0x2a1f3c0", "va 0xffffffff81234560" or "do_sys_openat2+0x10".
  std::string describe() const;
};

/// Everything a config says of a breakpoint but where it is.
struct breakpoint_options {
  std::string name;
  std::string view;  ///< by name; resolved to the domain's view when it is armed
  std::vector<std::string> tags;
  capture_list captures;
  std::optional<handler_binding> handler;
  rate_limit limit;
  /// Globs of process names (Linux comm, Windows ImageFileName) whose hits it reports; none:
  /// every process's. Hits of others are stepped over unrecorded and counted as filtered.
  std::vector<std::string> processes;
  bool operator==(const breakpoint_options&) const = default;
};

/// One configured breakpoint: what the config reader builds, the plan holds, a reload
/// compares and the registry arms.
struct breakpoint_def {
  breakpoint_options options;
  breakpoint_target target;
  const std::string& name() const { return options.name; }
  bool operator==(const breakpoint_def&) const = default;
  /// A plain one: `name` at `pa` in `view`; no tags, captures, handler or rate limit.
  static breakpoint_def at(std::string name, uint64_t pa, std::string view = "main") {
    breakpoint_def def;
    def.options.name = std::move(name);
    def.options.view = std::move(view);
    def.target = breakpoint_target::physical(pa);
    return def;
  }
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

using tag_list = std::shared_ptr<const std::vector<std::string>>;

/// What only some breakpoints have, kept out of line so that a plain one stays small.
struct breakpoint_extras {
  tag_list tags;
  capture_list captures;
  std::shared_ptr<const handler_binding> handler;
  std::unique_ptr<rate_limiter> limiter;
  std::vector<std::string> processes;  ///< globs; none: every process's hits
};

/// An armed breakpoint. Immutable once published but for its hit counts, which the one
/// poller that owns its domain's ring increments (others only read them), and the address of
/// a virtual one, which the registry moves while it is out of the table (its page went and
/// came back elsewhere). Kept small: there may be a hundred thousand (72 bytes, and its
/// extras only if it has any).
struct breakpoint {
  std::string name;
  mutable std::atomic<uint64_t> hits{0};
  mutable std::atomic<uint64_t> filtered{0};        ///< hits in processes it does not report
  std::unique_ptr<const breakpoint_extras> extras;  ///< none: no tags, captures, handler, limit
  drv::view_id view = 0;
  bool live = false;    ///< armed by a reload, after the session's start: counts from then on
  bool walked = false;  ///< a symbol or a virtual address: placed by a page-table walk

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
  /// Globs of the processes whose hits it reports; none: every process's.
  const std::vector<std::string>& processes() const {
    return extras ? extras->processes : no_extras.processes;
  }
  /// True if a hit in process `name` is reported.
  bool reports(std::string_view process) const;

  /// Where it traps (a pending one: where it last did; 0 if it never did).
  uint64_t pa() const { return pa_.load(std::memory_order_relaxed); }
  /// A virtual one whose page is not mapped now: armed when it is.
  bool pending() const { return pending_.load(std::memory_order_relaxed); }
  /// The registry's, while the breakpoint is in no table.
  void move_to(uint64_t pa) const { pa_.store(pa, std::memory_order_relaxed); }
  void set_pending(bool pending) const { pending_.store(pending, std::memory_order_relaxed); }

private:
  static const breakpoint_extras no_extras;
  mutable std::atomic<uint64_t> pa_{0};
  mutable std::atomic<bool> pending_{false};
};

/// `def` armed in `view`, with `tags` (or, if none are given, the definition's own).
breakpoint_ptr make_breakpoint(const breakpoint_def& def, drv::view_id view, armed_by when,
                               tag_list tags = nullptr);

}  // namespace vmitap
