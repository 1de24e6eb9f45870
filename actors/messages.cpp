#include "actors/messages.hpp"

#include <algorithm>

namespace vmitap {

const char* to_string(step_mode m) {
  return m == step_mode::fast ? "fast" : "classic";
}

bool breakpoint_table::manages(drv::view_id view) const {
  return std::find(views.begin(), views.end(), view) != views.end();
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
  hits_dropped += x.hits_dropped;
  return *this;
}

}  // namespace vmitap
