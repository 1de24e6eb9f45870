#pragma once

// A recurring failure logged at most once per interval per cause, with the count of what was
// left out since: a cause that comes and goes (a handler failing every third call) must not
// flood the log, and the log still says how often it happened.

#include "drivers/defaults.hpp"

#include <chrono>
#include <cstdint>
#include <string>

namespace vmitap {

class log_limit {
public:
  using clock = std::chrono::steady_clock;

  explicit log_limit(clock::duration interval = defaults::log_interval) : interval_(interval) {}

  /// One occurrence at `now`: true if it may be logged; its line should end with `note()`.
  bool allow(clock::time_point now = clock::now()) {
    if (logged_ && now - last_ < interval_) {
      ++left_out_;
      return false;
    }
    logged_ = true;
    last_ = now;
    note_ = left_out_ ? " (" + std::to_string(left_out_) + " more like it since the last report)"
                      : std::string{};
    left_out_ = 0;
    return true;
  }
  /// For the line `allow()` just allowed: how many occurrences it left out before.
  const std::string& note() const { return note_; }

private:
  clock::duration interval_;
  clock::time_point last_{};
  bool logged_ = false;
  uint64_t left_out_ = 0;
  std::string note_;
};

}  // namespace vmitap
