#pragma once

#include <caf/error.hpp>

#include <functional>
#include <memory>

namespace vmitap {

/// Calls `done(first_error)` once `count` asynchronous steps have reported in (at once when
/// `count` is 0). Lives in one actor: not thread-safe, and needs none.
class join_counter {
public:
  join_counter(size_t count, std::function<void(caf::error)> done) :
    left_(count), done_(std::move(done)) {}
  void report(caf::error err) {
    if (err && !first_)
      first_ = std::move(err);
    if (--left_ == 0)
      done_(std::move(first_));
  }
  /// For a count of zero: nothing will report, so finish now.
  void finish_empty() {
    if (left_ == 0)
      done_(caf::error{});
  }

private:
  size_t left_;
  caf::error first_;
  std::function<void(caf::error)> done_;
};

template <class F>
std::shared_ptr<join_counter> join(size_t count, F done) {
  auto j = std::make_shared<join_counter>(count, std::move(done));
  j->finish_empty();  // `done` itself was moved into the counter
  return j;
}

}  // namespace vmitap
