#include "actors/messages.hpp"

namespace vmitap {

const char* to_string(step_mode m) {
  switch (m) {
    case step_mode::classic: return "classic";
    case step_mode::fast: return "fast";
    case step_mode::emulate: return "emulate";
  }
  return "unknown";
}

breakpoint_ptr make_breakpoint(const breakpoint_spec& spec, tag_list tags) {
  auto bp = std::make_shared<breakpoint>();
  bp->name = spec.name;
  bp->pa = spec.pa;
  bp->view = spec.view;
  bp->live = spec.live;
  bp->captures = spec.captures;
  if (spec.handler)
    bp->handler = std::make_shared<const handler_binding>(*spec.handler);
  if (tags)
    bp->tags = std::move(tags);
  else if (!spec.tags.empty())
    bp->tags = std::make_shared<const std::vector<std::string>>(spec.tags);
  return bp;
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

}  // namespace vmitap
