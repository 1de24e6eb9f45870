#include "drivers/sim/hypervisor.hpp"

#include "drivers/sim/runner.hpp"

namespace vmitap::sim {

hypervisor::hypervisor(hypervisor_config cfg) : cfg_(cfg) {
  if (cfg_.slice_instructions == 0)
    cfg_.slice_instructions = 1;
  auto threads = cfg_.threaded ? std::max(cfg_.guest_threads, 1u) : 1u;
  for (uint32_t i = 0; i < threads; ++i)
    runners_.push_back(std::make_unique<runner>(cfg_.spin, cfg_.threaded));
}

hypervisor::~hypervisor() {
  runners_.clear();  // guest threads stop before the domains go
}

caf::expected<std::shared_ptr<domain>> hypervisor::create_domain(domain_config cfg) {
  std::shared_ptr<domain> d;
  {
    std::lock_guard g{domains_mutex_};
    auto made = domain::make(*this, next_id_, std::move(cfg));
    if (!made)
      return std::move(made.error());
    d = std::move(*made);
    ++next_id_;
    d->bind([this, id = d->id()](drv::vcpu_id v) {
      return runners_[(id * 31 + v) % runners_.size()].get();
    });
    domains_.emplace(d->id(), d);
  }
  notify({d->info(), true});
  return d;
}

void hypervisor::destroy_domain(drv::domain_id id) {
  std::shared_ptr<domain> d;
  {
    std::lock_guard g{domains_mutex_};
    auto i = domains_.find(id);
    if (i == domains_.end())
      return;
    d = i->second;
    domains_.erase(i);
    graveyard_.push_back(d);
  }
  d->die();
  notify({d->info(), false});
}

std::shared_ptr<domain> hypervisor::restart_domain(drv::domain_id id) {
  auto old = find(id);
  if (!old)
    return nullptr;
  auto cfg = old->config();
  destroy_domain(id);
  auto fresh = create_domain(std::move(cfg));
  return fresh ? *fresh : nullptr;  // the same config fitted before
}

std::shared_ptr<domain> hypervisor::find(drv::domain_id id) const {
  std::lock_guard g{domains_mutex_};
  auto i = domains_.find(id);
  return i == domains_.end() ? nullptr : i->second;
}

std::vector<std::shared_ptr<domain>> hypervisor::domains() const {
  std::lock_guard g{domains_mutex_};
  std::vector<std::shared_ptr<domain>> out;
  for (auto& [id, d] : domains_)
    out.push_back(d);
  return out;
}

uint64_t hypervisor::add_watch(std::function<void(const drv::domain_change&)> fn) {
  std::lock_guard g{watch_mutex_};
  watches_.emplace(next_watch_, std::move(fn));
  return next_watch_++;
}

void hypervisor::remove_watch(uint64_t token) {
  std::lock_guard g{watch_mutex_};
  watches_.erase(token);
}

void hypervisor::notify(const drv::domain_change& change) {
  std::lock_guard g{watch_mutex_};
  for (auto& [token, fn] : watches_)
    fn(change);
}

size_t hypervisor::run_pending(size_t max_slices) {
  return runners_.front()->run_pending(max_slices);
}

std::chrono::nanoseconds hypervisor::guest_cpu_time() const {
  std::chrono::nanoseconds sum{};
  for (auto& r : runners_)
    sum += r->cpu_time();
  return sum;
}

}  // namespace vmitap::sim
