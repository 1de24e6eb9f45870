#include "drivers/sim/runner.hpp"

#include "drivers/sim/domain.hpp"

#include <sys/prctl.h>
#include <ctime>

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
  stop_ = true;
  { std::lock_guard g{mutex_}; }
  wake_.notify_all();
  if (thread_.joinable())
    thread_.join();
}

void runner::wake(vcpu_handle* vcpu) {
  inbox_.push(vcpu);
  if (sleeping_.load()) {           // seq_cst, as loop()'s store: one of us sees the other
    { std::lock_guard g{mutex_}; }  // the sleeper is in wait() or has not checked yet
    wake_.notify_one();
  }
}

void runner::take_inbox() {
  while (auto* n = inbox_.pop())
    ready_.push_back(static_cast<vcpu_handle*>(n));
}

bool runner::run_one(sim_clock::time_point now) {
  while (!timed_.empty() && timed_.top().due <= now) {
    ready_.push_back(timed_.top().vcpu);
    timed_.pop();
  }
  if (ready_.empty())
    return false;
  auto* v = ready_.front();
  ready_.pop_front();
  auto r = v->dom->run_slice(v->id);
  if (r.kind == slice_result::yielded)
    ready_.push_back(v);
  else if (r.kind == slice_result::not_due)
    timed_.push({r.due, v});
  return true;
}

void runner::loop() {
  // Timers as exact as the kernel can: a VCPU due in 15 µs must not wake 50 µs late.
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
  if (pthread_getcpuclockid(pthread_self(), &cpu_clock_) == 0)
    cpu_clock_valid_ = true;
  auto idle_since = sim_clock::now();
  while (!stop_.load(std::memory_order_relaxed)) {
    take_inbox();
    auto now = sim_clock::now();
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
    sleeping_.store(true);
    if (!inbox_.maybe_nonempty() && !stop_) {
      if (next == sim_clock::time_point::max())
        wake_.wait(g);
      else
        wake_.wait_until(g, next - spin_);  // then poll for the last stretch
    }
    sleeping_.store(false);
    idle_since = sim_clock::now();
  }
}

size_t runner::run_pending(size_t max_slices) {
  std::lock_guard g{manual_mutex_};
  size_t ran = 0;
  while (ran < max_slices) {
    take_inbox();
    if (!run_one(sim_clock::now()))
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
