#include "actors/messages.hpp"

#include <algorithm>
#include <charconv>

namespace vmitap {

const char* to_string(step_mode m) {
  switch (m) {
    case step_mode::classic: return "classic";
    case step_mode::fast: return "fast";
    case step_mode::emulate: return "emulate";
  }
  return "unknown";
}

const breakpoint_extras breakpoint::no_extras{};

breakpoint_ptr make_breakpoint(const breakpoint_spec& spec, tag_list tags) {
  auto bp = std::make_shared<breakpoint>();
  bp->name = spec.name;
  bp->pa = spec.pa;
  bp->view = spec.view;
  bp->live = spec.live;
  if (!tags && !spec.tags.empty())
    tags = std::make_shared<const std::vector<std::string>>(spec.tags);
  if (tags || !spec.captures.empty() || spec.handler || spec.limit.max_per_second > 0) {
    auto extras = std::make_unique<breakpoint_extras>();
    extras->tags = std::move(tags);
    extras->captures = spec.captures;
    if (spec.handler)
      extras->handler = std::make_shared<const handler_binding>(*spec.handler);
    if (spec.limit.max_per_second > 0)
      extras->limiter = std::make_unique<rate_limiter>(spec.limit);
    bp->extras = std::move(extras);
  }
  return bp;
}

const capture_value* hit_site::capture(std::string_view name) const {
  if (!bp || bp->captures().empty())
    return nullptr;
  auto& specs = *bp->captures().specs;
  for (size_t i = 0; i < specs.size() && i < captures.size(); ++i)
    if (specs[i].name == name)
      return &captures[i];
  return nullptr;
}

std::optional<uint64_t> hit_site::value(std::string_view name) const {
  auto* c = capture(name);
  // A value capture reads "0x" and hex digits; anything else is a string or bytes.
  if (!c || c->fault != drv::translation_fault::none || c->text.size() < 3
      || c->text.compare(0, 2, "0x") != 0)
    return std::nullopt;
  uint64_t v = 0;
  auto* end = c->text.data() + c->text.size();
  auto [at, err] = std::from_chars(c->text.data() + 2, end, v, 16);
  if (err != std::errc{} || at != end)
    return std::nullopt;
  return v;
}

bool rate_limiter::over(std::chrono::steady_clock::time_point now) {
  if (suppressing_.load(std::memory_order_acquire))
    return false;  // asked already: hits until the disarm takes effect count, nothing more
  if (now - window_start_ >= std::chrono::seconds(1)) {
    window_start_ = now;
    window_hits_ = 0;
  }
  if (++window_hits_ <= limit_.max_per_second)
    return false;
  window_hits_ = 0;
  window_start_ = {};
  suppressing_.store(true, std::memory_order_relaxed);
  return true;
}

vcpu_stats& vcpu_stats::operator+=(const vcpu_stats& x) {
  events += x.events;
  hits += x.hits;
  neighbours += x.neighbours;
  stale += x.stale;
  spurious += x.spurious;
  malformed += x.malformed;
  singlesteps += x.singlesteps;
  respond_failures += x.respond_failures;
  return *this;
}

namespace {

/// A breakpoint apart from its session: name, view, address and `hits`; armed part of the
/// time (`live`).
breakpoint_ptr detached_copy(const breakpoint& bp, uint64_t hits) {
  auto c = std::make_shared<breakpoint>();
  c->name = bp.name;
  c->pa = bp.pa;
  c->view = bp.view;
  c->hits.store(hits, std::memory_order_relaxed);
  c->live = true;
  return c;
}

}  // namespace

void fold_breakpoints(std::vector<breakpoint_ptr>& into, const std::vector<breakpoint_ptr>& bps) {
  for (auto& bp : bps) {
    auto same = std::find_if(into.begin(), into.end(), [&](auto& x) {
      return x->name == bp->name && x->view == bp->view && x->pa == bp->pa;
    });
    if (same == into.end())
      into.push_back(bp);
    else
      *same = detached_copy(*bp, (*same)->hits.load(std::memory_order_relaxed)
                                   + bp->hits.load(std::memory_order_relaxed));
  }
}

void fold(domain_report& into, const domain_report& later) {
  fold_breakpoints(into.breakpoints, later.breakpoints);
  fold_breakpoints(into.removed, later.removed);
  into.id = later.id;
  into.died = into.died || later.died;
  into.attached = into.attached || later.attached;
  into.totals += later.totals;
  into.access_calls += later.access_calls;
  into.access_changes += later.access_changes;
  into.access_failures += later.access_failures;
  if (into.error.empty())
    into.error = later.error;
  into.sessions += later.sessions;
}

}  // namespace vmitap
