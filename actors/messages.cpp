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
