#pragma once

// The driver port over the simulated hypervisor: what the engine sees of drivers/sim.

#include "drivers/driver.hpp"
#include "drivers/sim/hypervisor.hpp"

namespace vmitap::sim {

class sim_driver final : public drv::driver {
public:
  explicit sim_driver(std::shared_ptr<hypervisor> hv);
  ~sim_driver() override;

  std::string name() const override { return "sim"; }
  caf::expected<std::vector<drv::domain_info>> list_domains() override;
  caf::error watch(std::function<void(const drv::domain_change&)> on_change) override;
  void unwatch() override;
  caf::expected<std::unique_ptr<drv::domain_session>> attach(drv::domain_id id) override;

  const std::shared_ptr<hypervisor>& host() const { return hv_; }

private:
  std::shared_ptr<hypervisor> hv_;
  uint64_t watch_token_ = 0;
};

}  // namespace vmitap::sim
