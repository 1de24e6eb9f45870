#pragma once

// The things alive right now (domain sessions, sinks), for readers on other threads: the
// exporter on a scrape, the progress line. Thread-safe; readers get a copy of the list.

#include <algorithm>
#include <memory>
#include <mutex>
#include <vector>

namespace vmitap {

template <class T>
class live_set {
public:
  void add(std::shared_ptr<T> x) {
    std::lock_guard g{mutex_};
    items_.push_back(std::move(x));
  }
  void remove(const T* x) {
    std::lock_guard g{mutex_};
    std::erase_if(items_, [x](auto& i) { return i.get() == x; });
  }
  std::vector<std::shared_ptr<T>> list() const {
    std::lock_guard g{mutex_};
    return items_;
  }

private:
  mutable std::mutex mutex_;
  std::vector<std::shared_ptr<T>> items_;
};

}  // namespace vmitap
