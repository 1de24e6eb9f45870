#pragma once

// Pollers: the threads that own event rings. Each poller drains many domains' rings, so the
// hot path costs no thread per VCPU or domain and no hand-off per request. A poller that has
// had nothing to do for `spin` sleeps in epoll on its rings' descriptors and its own inbox;
// while requests keep coming it never sleeps, and a request is answered without a wake-up.
// Everything else reaches a poller through its inbox: rings to add or release, barriers.

#include "actors/hotpath/event_path.hpp"

#include <condition_variable>
#include <functional>
#include <optional>
#include <thread>

namespace vmitap {

class poller {
public:
  struct options {
    std::chrono::nanoseconds spin = defaults::poller_spin;
    bool threaded = true;  ///< false: a test calls run_once()
  };

  explicit poller(options opts);
  ~poller();
  poller(const poller&) = delete;
  poller& operator=(const poller&) = delete;

  /// The poller owns `path` (and drains its ring) from now on.
  void add(std::shared_ptr<event_path> path);
  /// Drains `path` one last time (everything raised before a pause is answered, responses
  /// held for handlers included), stops
  /// polling it and then calls `done` on the poller thread.
  void release(event_path* path, std::function<void()> done);
  /// Drains `path` once and then calls `done` on the poller thread: everything raised before
  /// the call is counted when `done` runs.
  void sync(event_path* path, std::function<void()> done);
  /// VCPUs of the rings it owns (for placing new rings).
  uint32_t load() const { return load_.load(std::memory_order_relaxed); }
  /// CPU time of the poller thread.
  std::chrono::nanoseconds cpu_time() const;

  /// One round: inbox, then every ring. With `may_sleep`, waits for work when there was none
  /// for `spin`. Returns true if it did any work.
  bool run_once(bool may_sleep);

private:
  void post(std::function<void()> fn);
  bool run_inbox();
  bool sleep();
  void loop();

  const options opts_;
  int epoll_ = -1;
  int wake_fd_ = -1;
  std::mutex mutex_;
  std::vector<std::function<void()>> inbox_;  // guarded by mutex_
  std::atomic<bool> has_inbox_{false};
  std::atomic<bool> sleeping_{false};
  std::atomic<bool> stop_{false};
  std::atomic<uint32_t> load_{0};
  // The poller thread's own.
  std::vector<std::shared_ptr<event_path>> paths_;
  /// When the poller last found nothing to do after work; none while it has work.
  std::optional<std::chrono::steady_clock::time_point> idle_since_;
  std::thread thread_;
  clockid_t cpu_clock_{};
  std::atomic<bool> cpu_clock_valid_{false};
};

/// A fixed set of pollers; a new ring goes to the least loaded.
class poller_pool {
public:
  poller_pool(size_t count, poller::options opts);
  poller& pick();
  size_t size() const { return pollers_.size(); }
  poller& at(size_t i) { return *pollers_[i]; }
  std::chrono::nanoseconds cpu_time() const;

private:
  std::vector<std::unique_ptr<poller>> pollers_;
};

}  // namespace vmitap
