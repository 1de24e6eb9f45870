#pragma once

// What one session's teardown is doing and what it has not undone yet, readable from any
// thread. The supervisor records its steps and the driver calls it makes, the controller the
// pages it has changed; when a detach outlives the stop deadline the engine reports from
// here, since the actor doing the teardown may be stuck in that very call.

#include "drivers/vm_event.hpp"

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace vmitap {

class teardown_watch {
public:
  using clock_type = std::chrono::steady_clock;

  /// The teardown's current step ("draining the ring", "restoring pages", …).
  void step(std::string what);
  /// Every step so far, in the order they began (a teardown has a handful).
  std::vector<std::string> steps() const;
  /// vmitap paused the domain (every VCPU) and has not resumed or detached it yet.
  void paused(bool on);

  /// A driver call in progress for as long as the guard lives.
  class call_guard {
  public:
    call_guard(teardown_watch* w, const char* call);
    ~call_guard();
    call_guard(const call_guard&) = delete;
    call_guard& operator=(const call_guard&) = delete;

  private:
    teardown_watch* w_;
  };
  /// `watch` may be null (a controller or supervisor built without one): then nothing is kept.
  static call_guard call(const std::shared_ptr<teardown_watch>& watch, const char* name) {
    return call_guard(watch.get(), name);
  }

  /// The controller changed (or restored) a page's access in a view.
  void changed(drv::view_id view, drv::gfn_t gfn);
  void restored(drv::view_id view, drv::gfn_t gfn);

  /// One line for people: the step and for how long, the call in progress, whether the
  /// domain is paused, the pages still changed per view (the first few by number).
  std::string describe(clock_type::time_point now = clock_type::now()) const;

private:
  mutable std::mutex mutex_;
  std::string step_ = "not started";
  std::vector<std::string> steps_;
  clock_type::time_point step_since_ = clock_type::now();
  const char* call_ = nullptr;
  clock_type::time_point call_since_{};
  bool paused_ = false;
  std::map<drv::view_id, std::set<drv::gfn_t>> changed_;
};

using teardown_watch_ptr = std::shared_ptr<teardown_watch>;

}  // namespace vmitap
