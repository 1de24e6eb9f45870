#include "actors/model/breakpoint.hpp"

namespace vmitap {

const breakpoint_extras breakpoint::no_extras{};

breakpoint_ptr make_breakpoint(const breakpoint_def& def, drv::view_id view, armed_by when,
                               tag_list tags) {
  auto& o = def.options;
  auto bp = std::make_shared<breakpoint>();
  bp->name = o.name;
  bp->pa = def.target.pa;
  bp->view = view;
  bp->live = when == armed_by::reload;
  if (!tags && !o.tags.empty())
    tags = std::make_shared<const std::vector<std::string>>(o.tags);
  if (tags || !o.captures.empty() || o.handler || o.limit.max_per_second > 0) {
    auto extras = std::make_unique<breakpoint_extras>();
    extras->tags = std::move(tags);
    extras->captures = o.captures;
    if (o.handler)
      extras->handler = std::make_shared<const handler_binding>(*o.handler);
    if (o.limit.max_per_second > 0)
      extras->limiter = std::make_unique<rate_limiter>(o.limit);
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
