// The baselines: the classic VMI event loop, in one thread for every domain or one thread
// per domain, and the floor (a fixed answer). They use the driver port as vmitap does and
// wait for events the same way (poll for `spin`, then sleep in epoll on the rings).

#include "bench/monitors.hpp"

#include <sys/epoll.h>

#include <thread>
#include <unordered_map>

namespace vmitap::bench {

namespace {

inline void cpu_relax() {
  __builtin_ia32_pause();
}

std::chrono::nanoseconds thread_cpu(pthread_t t) {
  clockid_t c;
  timespec ts{};
  if (pthread_getcpuclockid(t, &c) != 0 || clock_gettime(c, &ts) != 0)
    return {};
  return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}

/// One monitored domain: its session, view, breakpoints by address and each VCPU's step state.
struct watched {
  std::unique_ptr<drv::domain_session> session;
  drv::event_ring* ring = nullptr;
  std::shared_ptr<sim::domain> dom;
  drv::view_id view = 0;
  step_mode mode = step_mode::fast;
  std::unordered_map<uint64_t, uint64_t> hits;   // pa → count
  std::unordered_map<uint64_t, uint32_t> pages;  // gfn → breakpoints
  std::vector<uint8_t> stepping;                 // classic: waiting for the singlestep
  std::vector<drv::event> in = std::vector<drv::event>(64);
  std::vector<drv::response> out;
  uint64_t events = 0;
  bool slow = false;  // its hits run the slow handler
};

class baseline final : public monitor {
public:
  baseline(monitor_kind kind, std::shared_ptr<sim::hypervisor> hv, std::vector<domain_spec> specs,
           monitor_options opts) :
    kind_(kind), hv_(std::move(hv)), specs_(std::move(specs)), opts_(opts), driver_(hv_) {}

  ~baseline() override { halt(); }

  caf::error start() override {
    for (size_t i = 0; i < specs_.size(); ++i) {
      auto w = std::make_unique<watched>();
      auto s = driver_.attach(specs_[i].dom->id());
      if (!s)
        return std::move(s.error());
      w->session = std::move(*s);
      w->dom = specs_[i].dom;
      w->mode = specs_[i].plan->mode;
      w->slow = i == 0 && opts_.slow_handler.count() > 0;
      w->stepping.assign(w->dom->info().vcpus, 0);
      w->session->pause();
      auto view = w->session->create_view(drv::page_access::rwx);
      if (!view)
        return std::move(view.error());
      w->view = *view;
      std::vector<drv::access_change> changes;
      for (auto& bp : specs_[i].plan->breakpoints) {
        auto pa = bp.target.pa;
        w->hits[pa] = 0;
        if (w->pages[drv::gfn_of(pa)]++ == 0)
          changes.push_back({drv::gfn_of(pa), drv::page_access::rw});
      }
      if (auto err = w->session->set_access(w->view, changes))
        return err;
      if (auto err = w->session->switch_all(w->view))
        return err;
      auto ring = w->session->start_events();
      if (!ring)
        return std::move(ring.error());
      w->ring = *ring;
      watched_.push_back(std::move(w));
    }
    if (kind_ == monitor_kind::per_domain) {
      for (auto& w : watched_)
        threads_.emplace_back([this, w = w.get()] { serve({w}); });
    } else {
      std::vector<watched*> all;
      for (auto& w : watched_)
        all.push_back(w.get());
      threads_.emplace_back([this, all] { serve(all); });
    }
    for (auto& w : watched_)
      w->session->resume();
    return {};
  }

  uint64_t events() override {
    uint64_t n = 0;
    for (auto& w : watched_)
      n += w->events;  // read while running: a torn read only misstates a progress figure
    return n;
  }

  std::chrono::nanoseconds tool_cpu() override {
    std::chrono::nanoseconds sum{};
    for (auto& t : threads_)
      sum += thread_cpu(t.native_handle());
    return sum + finished_cpu_;
  }

  bool stop_and_verify() override {
    for (auto& w : watched_)
      w->session->pause();  // what was raised is in the ring
    halt();
    bool ok = true;
    for (auto& w : watched_) {
      drain(*w);  // the loop thread is gone: answer the rest here
      if (kind_ != monitor_kind::floor)
        for (auto& [pa, n] : w->hits)
          if (n != w->dom->reached(pa, w->view)) {
            std::fprintf(stderr, "%s: pa %#lx hits %lu truth %lu\n", to_string(kind_), pa, n,
                         w->dom->reached(pa, w->view));
            ok = false;
          }
      std::vector<drv::access_change> restore;  // a fresh view: its pages were rwx
      for (auto& [gfn, n] : w->pages)
        restore.push_back({gfn, drv::page_access::rwx});
      ok &= !w->session->set_access(w->view, restore) && !w->session->switch_all(0) &&
            !w->session->destroy_view(w->view);
      w->session->detach();
      auto inv = w->dom->check();
      if (!(inv.holds() && inv.answered_by_detach == 0)) {
        std::fprintf(stderr, "%s: raised %lu answered %lu by detach %lu paused %lu changed %lu\n",
                     to_string(kind_), inv.requests_raised, inv.requests_answered,
                     inv.answered_by_detach, inv.paused_vcpus, inv.pages_changed);
        ok = false;
      }
    }
    return ok;
  }

private:
  void halt() {
    stop_ = true;
    for (auto& t : threads_) {
      finished_cpu_ += thread_cpu(t.native_handle());
      t.join();
    }
    threads_.clear();
  }

  void decide(watched& w, const drv::event& ev) {
    auto rsp = drv::make_response(ev);
    bool classic = w.mode == step_mode::classic;
    if (ev.reason == drv::event_reason::singlestep) {
      rsp.flags |= drv::flag::alternate_p2m | drv::flag::toggle_singlestep;
      rsp.view = w.view;
      if (ev.vcpu < w.stepping.size())
        w.stepping[ev.vcpu] = 0;
    } else if (ev.reason == drv::event_reason::mem_access && ev.vcpu < w.stepping.size()) {
      if (kind_ != monitor_kind::floor) {
        if (auto hit = w.hits.find(drv::pa_of(ev.mem.gfn, ev.mem.offset)); hit != w.hits.end()) {
          ++hit->second;
          if (w.slow)
            slow_handler(opts_);
        }
      }
      if (w.mode == step_mode::emulate) {
        rsp.flags |= drv::flag::emulate;
      } else {
        rsp.flags |= drv::flag::alternate_p2m;
        rsp.view = 0;
        if (classic) {
          if (!w.stepping[ev.vcpu])
            rsp.flags |= drv::flag::toggle_singlestep;
          w.stepping[ev.vcpu] = 1;
        } else {
          rsp.flags |= drv::flag::fast_singlestep;
          rsp.fast_return_view = w.view;
        }
      }
    }
    w.out.push_back(rsp);
  }

  size_t drain(watched& w) {
    size_t n = w.ring->take(w.in);
    if (n == 0)
      return 0;
    w.out.clear();
    for (size_t i = 0; i < n; ++i)
      decide(w, w.in[i]);
    w.ring->give(w.out);
    w.events += n;
    return n;
  }

  /// The loop: drain every ring; with nothing to do for `spin`, sleep until a ring has work.
  void serve(std::vector<watched*> mine) {
    int ep = epoll_create1(EPOLL_CLOEXEC);
    for (auto* w : mine) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.ptr = w;
      epoll_ctl(ep, EPOLL_CTL_ADD, w->ring->fd(), &ev);
    }
    auto last = std::chrono::steady_clock::now();
    while (!stop_.load(std::memory_order_relaxed)) {
      size_t work = 0;
      for (auto* w : mine)
        work += drain(*w);
      auto now = std::chrono::steady_clock::now();
      if (work) {
        last = now;
        continue;
      }
      if (now - last < opts_.spin) {
        cpu_relax();
        continue;
      }
      bool pending = false;
      for (auto* w : mine)
        pending |= w->ring->arm().pending;
      if (!pending) {
        epoll_event ready[16];
        int n = epoll_wait(ep, ready, 16, 20);  // a bounded wait: `stop_` is checked again
        for (int i = 0; i < n; ++i)
          static_cast<watched*>(ready[i].data.ptr)->ring->acknowledge();
      }
      last = std::chrono::steady_clock::now();
    }
    close(ep);
  }

  monitor_kind kind_;
  std::shared_ptr<sim::hypervisor> hv_;
  std::vector<domain_spec> specs_;
  monitor_options opts_;
  sim::sim_driver driver_;
  std::vector<std::unique_ptr<watched>> watched_;
  std::vector<std::thread> threads_;
  std::atomic<bool> stop_{false};
  std::chrono::nanoseconds finished_cpu_{};
};

}  // namespace

void slow_handler(const monitor_options& opts) {
  if (opts.slow_handler_sleeps) {
    std::this_thread::sleep_for(opts.slow_handler);
    return;
  }
  auto until = std::chrono::steady_clock::now() + opts.slow_handler;
  while (std::chrono::steady_clock::now() < until)
    cpu_relax();
}

std::unique_ptr<monitor> make_baseline(monitor_kind kind, std::shared_ptr<sim::hypervisor> hv,
                                       std::vector<domain_spec> domains, monitor_options opts) {
  return std::make_unique<baseline>(kind, std::move(hv), std::move(domains), opts);
}

}  // namespace vmitap::bench
