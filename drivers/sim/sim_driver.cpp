#include "drivers/sim/sim_driver.hpp"

#include "engine/error.hpp"

namespace vmitap::sim {

namespace {

/// A monitoring session: forwards to the domain, which applies Xen's semantics.
class sim_session final : public drv::domain_session {
public:
  explicit sim_session(std::shared_ptr<domain> d) : domain_(std::move(d)) {}
  ~sim_session() override { domain_->detach(); }

  drv::domain_info info() const override { return domain_->info(); }
  caf::expected<drv::view_id> create_view(drv::page_access a) override {
    return domain_->create_view(a);
  }
  caf::error destroy_view(drv::view_id v) override { return domain_->destroy_view(v); }
  caf::error switch_all(drv::view_id v) override { return domain_->switch_all(v); }
  caf::expected<drv::page_access> get_access(drv::view_id v, drv::gfn_t gfn) override {
    return domain_->get_access(v, gfn);
  }
  caf::error set_access(drv::view_id v, std::span<const drv::access_change> c) override {
    return domain_->set_access(v, c);
  }
  caf::error start_events(drv::event_handlers h) override {
    return domain_->start_events(std::move(h));
  }
  caf::error respond(const drv::response& rsp) override { return domain_->respond(rsp); }
  caf::error read_physical(uint64_t pa, std::span<std::byte> out) override {
    return domain_->read_physical(pa, out);
  }
  caf::error pause() override { return domain_->pause(); }
  caf::error resume() override { return domain_->resume(); }
  caf::error detach() override { return domain_->detach(); }

private:
  std::shared_ptr<domain> domain_;
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
    return make_error(ec::no_such_domain, "no domain " + std::to_string(id));
  if (auto err = d->attach())
    return err;
  return std::unique_ptr<drv::domain_session>{new sim_session(std::move(d))};
}

}  // namespace vmitap::sim
