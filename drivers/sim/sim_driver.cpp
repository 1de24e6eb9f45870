#include "drivers/sim/sim_driver.hpp"

#include "drivers/error.hpp"

#include <cerrno>
#include "drivers/sim/queues.hpp"

#include <sys/eventfd.h>
#include <unistd.h>
#include <thread>

namespace vmitap::sim {

namespace {

/// The sim's event channel: guest threads push requests, one poller takes and answers them.
/// An eventfd wakes the poller only when it asked to be woken (`arm`), as Xen's event
/// channel wakes a poller that unmasked its port.
class sim_ring final : public drv::event_ring {
public:
  sim_ring(std::shared_ptr<domain> d, uint64_t session) :
    domain_(std::move(d)),
    session_(session),
    // Each VCPU has at most one request out, plus the out-of-range ones: it never fills.
    queue_(domain_->info().vcpus + 9),
    fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}
  ~sim_ring() override {
    if (fd_ >= 0)
      close(fd_);
  }

  bool usable() const { return fd_ >= 0; }

  /// Guest thread: a request was raised.
  void push(const drv::event& ev) {
    while (!queue_.push(ev))
      std::this_thread::yield();   // cannot happen while the bound holds; never lose one
    if (armed_.exchange(false)) {  // seq_cst, as arm()'s store: one of us sees the other
      uint64_t one = 1;
      [[maybe_unused]] auto n = write(fd_, &one, sizeof one);  // cannot fill: it is drained
    }
  }

  size_t take(std::span<drv::event> out) override {
    size_t n = 0;
    while (n < out.size() && queue_.pop(out[n]))
      ++n;
    return n;
  }

  drv::give_result give(std::span<const drv::response> rsps) override {
    drv::give_result r;
    for (auto& rsp : rsps)
      if (auto err = domain_->respond(session_, rsp)) {
        if (r.failed++ == 0)
          r.first = std::move(err);
      }
    return r;
  }

  int fd() const override { return fd_; }

  drv::arm_result arm() override {
    armed_.store(true);
    if (queue_.empty())
      return {};
    armed_.store(false);
    drv::arm_result r;
    r.pending = true;
    return r;
  }

  void acknowledge() override {
    uint64_t count;
    [[maybe_unused]] auto n = read(fd_, &count, sizeof count);
  }

private:
  std::shared_ptr<domain> domain_;
  uint64_t session_;
  bounded_ring<drv::event> queue_;
  int fd_;
  std::atomic<bool> armed_{false};
};

/// A monitoring session: forwards to the domain, which applies the sim's semantics.
class sim_session final : public drv::domain_session {
public:
  sim_session(std::shared_ptr<domain> d, uint64_t serial) :
    domain_(std::move(d)), serial_(serial) {}
  ~sim_session() override { domain_->detach(serial_); }  // a no-op once detached or replaced

  drv::domain_info info() const override { return domain_->info(); }
  caf::expected<drv::view_id> create_view(drv::page_access a) override {
    return domain_->create_view(serial_, a);
  }
  caf::error destroy_view(drv::view_id v) override { return domain_->destroy_view(serial_, v); }
  caf::error switch_all(drv::view_id v) override { return domain_->switch_all(serial_, v); }
  caf::error get_access(drv::view_id v, std::span<const drv::gfn_t> gfns,
                        std::span<drv::page_access> out) override {
    return domain_->get_access(serial_, v, gfns, out);
  }
  caf::error set_access(drv::view_id v, std::span<const drv::access_change> c) override {
    return domain_->set_access(serial_, v, c);
  }
  caf::error set_singlestep(drv::vcpu_id vcpu, bool on) override {
    return domain_->set_singlestep(serial_, vcpu, on);
  }
  caf::expected<drv::event_ring*> start_events() override {
    if (ring_)
      return ring_.get();
    auto ring = std::make_unique<sim_ring>(domain_, serial_);
    if (!ring->usable())
      return make_error(ec::driver_call_failed, "eventfd", errno);
    auto* r = ring.get();
    if (auto err = domain_->start_events(serial_, [r](const drv::event& ev) { r->push(ev); }))
      return err;
    ring_ = std::move(ring);
    return ring_.get();
  }
  caf::error read_physical(uint64_t pa, std::span<std::byte> out) override {
    return domain_->read_physical(serial_, pa, out);
  }
  caf::expected<drv::registers> vcpu_registers(drv::vcpu_id vcpu) override {
    return domain_->vcpu_registers(serial_, vcpu);
  }
  caf::error pause() override { return domain_->pause(serial_); }
  caf::error resume() override { return domain_->resume(serial_); }
  caf::error detach() override { return domain_->detach(serial_); }

private:
  std::shared_ptr<domain> domain_;
  uint64_t serial_;
  std::unique_ptr<sim_ring> ring_;  // outlives the detach in ~sim_session: no push after
};

}  // namespace

sim_driver::sim_driver(std::shared_ptr<hypervisor> hv) : hv_(std::move(hv)) {}

sim_driver::~sim_driver() {
  unwatch();
}

caf::expected<std::vector<drv::domain_info>> sim_driver::list_domains() {
  std::vector<drv::domain_info> out;
  for (auto& d : hv_->domains())
    out.push_back(d->info());
  return out;
}

caf::error sim_driver::watch(std::function<void(const drv::domain_change&)> on_change) {
  unwatch();
  watch_token_ = hv_->add_watch(std::move(on_change));
  return {};
}

void sim_driver::unwatch() {
  if (watch_token_ != 0)
    hv_->remove_watch(std::exchange(watch_token_, 0));
}

caf::expected<std::unique_ptr<drv::domain_session>> sim_driver::attach(drv::domain_id id) {
  auto d = hv_->find(id);
  if (!d)
    return make_error(ec::no_such_domain, "attach: no domain " + std::to_string(id));
  auto serial = d->attach();
  if (!serial)
    return std::move(serial.error());
  return std::unique_ptr<drv::domain_session>{new sim_session(std::move(d), *serial)};
}

}  // namespace vmitap::sim
