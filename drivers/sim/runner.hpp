#pragma once

// A guest thread: the simulated host's physical CPU. It runs the VCPUs handed to it one
// slice at a time, keeps those that wait for the exit-latency model in a timed queue, and
// polls (rather than sleeps) while work is due within `spin`, so a VCPU resumes within
// about a microsecond of when it is due. Other threads hand it VCPUs through a lock-free
// queue. With `threaded = false` nothing runs until a test calls `run_pending()`.

#include "drivers/sim/queues.hpp"
#include "drivers/vm_event.hpp"

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <queue>
#include <thread>
#include <vector>

namespace vmitap::sim {

using sim_clock = std::chrono::steady_clock;

class domain;
class runner;

/// What a runner queues: one VCPU of one domain. Embedded in the VCPU.
struct vcpu_handle : mpsc_node {
  domain* dom = nullptr;
  drv::vcpu_id id = 0;
  runner* owner = nullptr;
};

class runner {
public:
  runner(std::chrono::nanoseconds spin, bool threaded);
  ~runner();
  runner(const runner&) = delete;
  runner& operator=(const runner&) = delete;

  /// Hands a VCPU to this guest thread (any thread). The caller owns the VCPU's queued flag:
  /// a VCPU is handed over at most once until its slice ends.
  void wake(vcpu_handle* vcpu);
  /// Manual mode: runs slices that are due, on the calling thread. Returns how many ran.
  size_t run_pending(size_t max_slices);
  /// CPU time this guest thread has used (0 in manual mode).
  std::chrono::nanoseconds cpu_time() const;

private:
  struct timed {
    sim_clock::time_point due;
    vcpu_handle* vcpu;
    bool operator<(const timed& other) const { return due > other.due; }  // earliest first
  };

  void loop();
  void take_inbox();
  bool run_one(sim_clock::time_point now);

  const std::chrono::nanoseconds spin_;
  intrusive_mpsc inbox_;
  std::atomic<bool> sleeping_{false};
  std::atomic<bool> stop_{false};
  std::mutex mutex_;  // with wake_: only to sleep
  std::condition_variable wake_;
  // The guest thread's own (or, in manual mode, the caller's).
  std::deque<vcpu_handle*> ready_;
  std::priority_queue<timed> timed_;
  std::mutex manual_mutex_;  // manual mode: one caller at a time
  std::thread thread_;
  clockid_t cpu_clock_{};
  std::atomic<bool> cpu_clock_valid_{false};
};

}  // namespace vmitap::sim
