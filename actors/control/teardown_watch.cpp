#include "actors/control/teardown_watch.hpp"

#include <cstdio>

namespace vmitap {

namespace {

std::string seconds_since(teardown_watch::clock_type::time_point then,
                          teardown_watch::clock_type::time_point now) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f s", std::chrono::duration<double>(now - then).count());
  return buf;
}

/// Pages listed by number before the rest are only counted.
constexpr size_t pages_listed = 8;

}  // namespace

void teardown_watch::step(std::string what) {
  std::lock_guard g{mutex_};
  steps_.push_back(what);
  step_ = std::move(what);
  step_since_ = clock_type::now();
}

std::vector<std::string> teardown_watch::steps() const {
  std::lock_guard g{mutex_};
  return steps_;
}

void teardown_watch::paused(bool on) {
  std::lock_guard g{mutex_};
  paused_ = on;
}

teardown_watch::call_guard::call_guard(teardown_watch* w, const char* call) : w_(w) {
  if (!w_)
    return;
  std::lock_guard g{w_->mutex_};
  w_->call_ = call;
  w_->call_since_ = clock_type::now();
}

teardown_watch::call_guard::~call_guard() {
  if (!w_)
    return;
  std::lock_guard g{w_->mutex_};
  w_->call_ = nullptr;
}

void teardown_watch::changed(drv::view_id view, drv::gfn_t gfn) {
  std::lock_guard g{mutex_};
  changed_[view].insert(gfn);
}

void teardown_watch::restored(drv::view_id view, drv::gfn_t gfn) {
  std::lock_guard g{mutex_};
  auto it = changed_.find(view);
  if (it == changed_.end())
    return;
  it->second.erase(gfn);
  if (it->second.empty())
    changed_.erase(it);
}

std::string teardown_watch::describe(clock_type::time_point now) const {
  std::lock_guard g{mutex_};
  std::string out = "at step \"" + step_ + "\" for " + seconds_since(step_since_, now);
  if (call_)
    out += ", in driver call " + std::string(call_) + " for " + seconds_since(call_since_, now);
  out += paused_ ? "; every VCPU is paused by vmitap" : "; no VCPU is paused by vmitap";
  if (changed_.empty())
    return out + "; no page is left changed";
  out += "; pages still changed:";
  char gfn[24];
  for (auto& [view, gfns] : changed_) {
    out += " view " + std::to_string(view) + ":";
    size_t listed = 0;
    for (auto page : gfns) {
      if (listed++ == pages_listed)
        break;
      std::snprintf(gfn, sizeof gfn, " %#llx", (unsigned long long)page);
      out += gfn;
    }
    if (gfns.size() > pages_listed)
      out += " (" + std::to_string(gfns.size()) + " in all)";
    out += ";";
  }
  out.pop_back();
  return out;
}

}  // namespace vmitap
