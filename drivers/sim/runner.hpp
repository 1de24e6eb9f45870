#pragma once

// A guest thread: the simulated host's physical CPU. It runs the VCPUs assigned to it one
// slice at a time, keeps those that wait for the exit-latency model in a timed queue, and
// polls (rather than sleeps) while work is due within `spin`, so a VCPU resumes within
// about a microsecond of when it is due. With `threaded = false` nothing runs until a test
// calls `run_pending()`.

#include "drivers/sim/domain.hpp"

#include <condition_variable>
#include <deque>
#include <queue>
#include <thread>
#include <vector>

namespace vmitap::sim {

class runner {
public:
  runner(std::chrono::nanoseconds spin, bool threaded);
  ~runner();
  runner(const runner&) = delete;
  runner& operator=(const runner&) = delete;

  /// Queues a slice of `vcpu` at `due` (now if in the past). Any thread.
  void enqueue(std::weak_ptr<domain> d, drv::vcpu_id vcpu, sim_clock::time_point due);
  /// Manual mode: runs slices that are due, on the calling thread. Returns how many ran.
  size_t run_pending(size_t max_slices);
  /// CPU time this guest thread has used (0 in manual mode).
  std::chrono::nanoseconds cpu_time() const;

private:
  struct item {
    std::weak_ptr<domain> dom;
    drv::vcpu_id vcpu = 0;
    sim_clock::time_point due;
  };
  struct later_first {
    bool operator()(const item& a, const item& b) const { return a.due > b.due; }
  };

  void loop();
  void take_inbox(sim_clock::time_point now);
  bool run_one(sim_clock::time_point now);

  const std::chrono::nanoseconds spin_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<item> inbox_;          // guarded by mutex_
  std::atomic<bool> has_inbox_{false};
  bool sleeping_ = false;            // guarded by mutex_
  bool stopping_ = false;            // guarded by mutex_
  std::atomic<bool> stop_flag_{false};
  // The guest thread's own (or, in manual mode, the caller's).
  std::deque<item> ready_;
  std::priority_queue<item, std::vector<item>, later_first> timed_;
  std::mutex manual_mutex_;          // manual mode: one caller at a time
  std::thread thread_;
  clockid_t cpu_clock_{};
  std::atomic<bool> cpu_clock_valid_{false};
};

}  // namespace vmitap::sim
