#include "actors/hotpath/poller.hpp"

#include <spdlog/spdlog.h>

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>

namespace vmitap {

namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

}  // namespace

poller::poller(options opts) : opts_(opts) {
  epoll_ = epoll_create1(EPOLL_CLOEXEC);
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (epoll_ < 0 || wake_fd_ < 0)
    throw std::runtime_error(std::string("poller: epoll/eventfd: ") + std::strerror(errno));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = nullptr;  // the inbox
  epoll_ctl(epoll_, EPOLL_CTL_ADD, wake_fd_, &ev);
  if (opts_.threaded)
    thread_ = std::thread([this] { loop(); });
}

poller::~poller() {
  stop_ = true;
  uint64_t one = 1;
  [[maybe_unused]] auto n = write(wake_fd_, &one, sizeof one);
  if (thread_.joinable())
    thread_.join();
  close(wake_fd_);
  close(epoll_);
}

void poller::post(std::function<void()> fn) {
  {
    std::lock_guard g{mutex_};
    inbox_.push_back(std::move(fn));
    has_inbox_.store(true);  // seq_cst, as sleep()'s accesses: one of us sees the other
  }
  if (sleeping_.load()) {
    uint64_t one = 1;
    [[maybe_unused]] auto n = write(wake_fd_, &one, sizeof one);
  }
}

void poller::add(std::shared_ptr<event_path> path) {
  load_ += path->weight();
  path->bind([this](std::function<void()> fn) { post(std::move(fn)); });
  post([this, path = std::move(path)] {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = path.get();
    if (epoll_ctl(epoll_, EPOLL_CTL_ADD, path->ring().fd(), &ev) != 0)
      spdlog::error("poller: epoll_ctl add: {}", std::strerror(errno));
    paths_.push_back(path);
  });
}

void poller::release(event_path* path, std::function<void()> done) {
  post([this, path, done = std::move(done)] {
    for (auto i = paths_.begin(); i != paths_.end(); ++i) {
      if (i->get() != path)
        continue;
      while (path->drain() > 0) {
      }
      path->release_held();  // no VCPU waits for a handler past its domain's detach
      epoll_ctl(epoll_, EPOLL_CTL_DEL, path->ring().fd(), nullptr);
      load_ -= path->weight();
      paths_.erase(i);
      break;
    }
    done();
  });
}

void poller::sync(event_path* path, std::function<void()> done) {
  post([path, done = std::move(done)] {
    while (path->drain() > 0) {
    }
    done();
  });
}

bool poller::run_inbox() {
  if (!has_inbox_.load(std::memory_order_acquire))
    return false;
  std::vector<std::function<void()>> work;
  {
    std::lock_guard g{mutex_};
    work.swap(inbox_);
    has_inbox_.store(false, std::memory_order_relaxed);
  }
  for (auto& fn : work)
    fn();
  return !work.empty();
}

bool poller::sleep() {
  sleeping_.store(true);
  bool pending = has_inbox_.load();
  int timeout_ms = -1;  // a ring that owes a notify is armed again by then
  for (size_t i = 0; i < paths_.size() && !pending; ++i) {
    auto armed = paths_[i]->arm();
    pending = armed.pending;
    if (auto retry = int(armed.retry_in.count()); retry >= 0)
      timeout_ms = timeout_ms < 0 ? retry : std::min(timeout_ms, retry);
  }
  if (pending) {
    sleeping_.store(false);
    return true;
  }
  epoll_event ready[64];
  int n = epoll_wait(epoll_, ready, 64, timeout_ms);
  sleeping_.store(false);
  for (int i = 0; i < n; ++i) {
    if (ready[i].data.ptr == nullptr) {
      uint64_t count;
      [[maybe_unused]] auto r = read(wake_fd_, &count, sizeof count);
    } else {
      static_cast<event_path*>(ready[i].data.ptr)->ring().acknowledge();
    }
  }
  return n > 0;
}

bool poller::run_once(bool may_sleep) {
  bool work = run_inbox();
  for (auto& p : paths_)
    work |= p->drain() > 0;
  if (work) {
    idle_since_.reset();  // no clock read while there is work: it cost ~5 % of a flood
    return true;
  }
  if (!may_sleep)
    return false;
  auto now = std::chrono::steady_clock::now();
  if (!idle_since_)
    idle_since_ = now;
  if (now - *idle_since_ < opts_.spin) {
    cpu_relax();
    return false;
  }
  sleep();
  idle_since_.reset();  // a wake-up is worth a spin
  return false;
}

void poller::loop() {
  if (pthread_getcpuclockid(pthread_self(), &cpu_clock_) == 0)
    cpu_clock_valid_ = true;
  while (!stop_.load(std::memory_order_relaxed))
    run_once(true);
  run_inbox();  // a release waiting for its answer gets it
}

std::chrono::nanoseconds poller::cpu_time() const {
  if (!cpu_clock_valid_)
    return {};
  timespec ts{};
  clock_gettime(cpu_clock_, &ts);
  return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}

poller_pool::poller_pool(size_t count, poller::options opts) {
  for (size_t i = 0; i < std::max<size_t>(count, 1); ++i)
    pollers_.push_back(std::make_unique<poller>(opts));
}

poller& poller_pool::pick() {
  auto* best = pollers_.front().get();
  for (auto& p : pollers_)
    if (p->load() < best->load())
      best = p.get();
  return *best;
}

std::chrono::nanoseconds poller_pool::cpu_time() const {
  std::chrono::nanoseconds sum{};
  for (auto& p : pollers_)
    sum += p->cpu_time();
  return sum;
}

}  // namespace vmitap
