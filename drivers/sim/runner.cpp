#include "drivers/sim/runner.hpp"

#include <ctime>
#include <sys/prctl.h>

namespace vmitap::sim {

namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

}  // namespace

runner::runner(std::chrono::nanoseconds spin, bool threaded) : spin_(spin) {
  if (threaded)
    thread_ = std::thread([this] { loop(); });
}

runner::~runner() {
  {
    std::lock_guard g{mutex_};
    stopping_ = true;
  }
  stop_flag_ = true;
  wake_.notify_all();
  if (thread_.joinable())
    thread_.join();
}

void runner::enqueue(std::weak_ptr<domain> d, drv::vcpu_id vcpu, sim_clock::time_point due) {
  bool wake = false;
  {
    std::lock_guard g{mutex_};
    inbox_.push_back({std::move(d), vcpu, due});
    has_inbox_.store(true, std::memory_order_release);
    wake = sleeping_;
  }
  if (wake)
    wake_.notify_one();
}

void runner::take_inbox(sim_clock::time_point now) {
  if (!has_inbox_.load(std::memory_order_acquire))
    return;
  std::vector<item> in;
  {
    std::lock_guard g{mutex_};
    in.swap(inbox_);
    has_inbox_.store(false, std::memory_order_relaxed);
  }
  for (auto& i : in) {
    if (i.due <= now)
      ready_.push_back(std::move(i));
    else
      timed_.push(std::move(i));
  }
}

bool runner::run_one(sim_clock::time_point now) {
  while (!timed_.empty() && timed_.top().due <= now) {
    ready_.push_back(timed_.top());
    timed_.pop();
  }
  if (ready_.empty())
    return false;
  auto it = std::move(ready_.front());
  ready_.pop_front();
  auto d = it.dom.lock();
  if (!d)
    return true;
  auto r = d->run_slice(it.vcpu);
  if (r.kind == slice_result::yielded)
    ready_.push_back({std::move(it.dom), it.vcpu, now});
  else if (r.kind == slice_result::not_due)
    timed_.push({std::move(it.dom), it.vcpu, r.due});
  return true;
}

void runner::loop() {
  // Timers as exact as the kernel can: a VCPU due in 15 µs must not wake 50 µs late.
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
  if (pthread_getcpuclockid(pthread_self(), &cpu_clock_) == 0)
    cpu_clock_valid_ = true;
  auto idle_since = sim_clock::now();
  while (!stop_flag_.load(std::memory_order_relaxed)) {
    auto now = sim_clock::now();
    take_inbox(now);
    if (run_one(now)) {
      idle_since = now;
      continue;
    }
    auto next = timed_.empty() ? sim_clock::time_point::max() : timed_.top().due;
    if (now - idle_since < spin_ || next - now <= spin_) {
      cpu_relax();  // work is due soon, or may be: poll
      continue;
    }
    std::unique_lock g{mutex_};
    if (stopping_ || !inbox_.empty())
      continue;
    sleeping_ = true;
    if (next == sim_clock::time_point::max())
      wake_.wait(g);
    else
      wake_.wait_until(g, next - spin_);  // then poll for the last stretch
    sleeping_ = false;
    idle_since = sim_clock::now();
  }
}

size_t runner::run_pending(size_t max_slices) {
  std::lock_guard g{manual_mutex_};
  size_t ran = 0;
  while (ran < max_slices) {
    auto now = sim_clock::now();
    take_inbox(now);
    if (!run_one(now))
      break;
    ++ran;
  }
  return ran;
}

std::chrono::nanoseconds runner::cpu_time() const {
  if (!cpu_clock_valid_)
    return {};
  timespec ts{};
  clock_gettime(cpu_clock_, &ts);
  return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}

}  // namespace vmitap::sim
