#pragma once

// An end-to-end scenario whose engine runs the Xen driver on a fake Xen 4.17 over the
// simulated hypervisor (a real vm_event ring page, event channel semantics, Xen's response
// rules), with the checks that nothing of vmitap's is left and Xen saw nothing it would refuse.

#include "drivers/xen/xen_driver.hpp"
#include "tests/support/fake_xen.hpp"
#include "tests/support/scenario.hpp"

namespace vmitap::testing {

struct xen_scenario : scenario {
  fake_xen xen{hv};

  explicit xen_scenario(sim::hypervisor_config hc = {}) : scenario(hc) {
    make_driver = [this]() -> std::shared_ptr<drv::driver> {
      auto d = xen::open_xen_driver(xen.api());
      EXPECT_TRUE(d) << render(d.error());
      return d ? *d : nullptr;
    };
  }

  /// Nothing of vmitap's is left on any live domain, and Xen saw nothing it would refuse.
  void expect_clean() {
    for (auto& v : xen.violations())
      ADD_FAILURE() << "Xen would not have let this pass: " << v;
    for (auto& d : hv->domains()) {  // every domain the sim ever ran
      if (d->state() == drv::domain_state::dead)
        continue;  // a dead domain keeps what Xen cleans up at its death
      EXPECT_FALSE(xen.monitor_enabled(d->id())) << d->info().name;
      EXPECT_FALSE(xen.altp2m_on(d->id())) << d->info().name;
      EXPECT_FALSE(xen.singlestep_monitor_on(d->id())) << d->info().name;
      EXPECT_EQ(xen.controller_pauses(d->id()), 0u) << d->info().name;
      EXPECT_EQ(d->check().answered_by_detach, 0u)
        << d->info().name << ": answered through the ring";
    }
  }
};

}  // namespace vmitap::testing
