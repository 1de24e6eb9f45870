#include "actors/model/breakpoint.hpp"

#include <fnmatch.h>

#include <cstdio>

namespace vmitap {

std::string breakpoint_target::describe() const {
  char hex[24];
  switch (by) {
    case kind::physical:
      std::snprintf(hex, sizeof hex, "0x%llx", static_cast<unsigned long long>(pa));
      return hex;
    case kind::virtual_address:
      std::snprintf(hex, sizeof hex, "0x%llx", static_cast<unsigned long long>(va));
      return std::string("va ") + hex;
    case kind::symbol:
      if (offset == 0)
        return symbol;
      std::snprintf(hex, sizeof hex, "+0x%llx", static_cast<unsigned long long>(offset));
      return symbol + hex;
  }
  return {};
}

bool breakpoint::reports(std::string_view process) const {
  const auto& globs = processes();
  if (globs.empty())
    return true;
  std::string name{process};
  for (auto& g : globs)
    if (::fnmatch(g.c_str(), name.c_str(), 0) == 0)
      return true;
  return false;
}

const breakpoint_extras breakpoint::no_extras{};

breakpoint_ptr make_breakpoint(const breakpoint_def& def, drv::view_id view, armed_by when,
                               tag_list tags) {
  auto& o = def.options;
  auto bp = std::make_shared<breakpoint>();
  bp->name = o.name;
  bp->move_to(def.target.pa);
  bp->view = view;
  bp->live = when == armed_by::reload;
  bp->walked = def.target.by != breakpoint_target::kind::physical;
  bp->set_pending(bp->walked && def.target.pa == 0);
  if (!tags && !o.tags.empty())
    tags = std::make_shared<const std::vector<std::string>>(o.tags);
  if (tags || !o.captures.empty() || o.handler || o.limit.max_per_second > 0 ||
      !o.processes.empty()) {
    auto extras = std::make_unique<breakpoint_extras>();
    extras->tags = std::move(tags);
    extras->captures = o.captures;
    if (o.handler)
      extras->handler = std::make_shared<const handler_binding>(*o.handler);
    if (o.limit.max_per_second > 0)
      extras->limiter = std::make_unique<rate_limiter>(o.limit);
    extras->processes = o.processes;
    bp->extras = std::move(extras);
  }
  return bp;
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

}  // namespace vmitap
