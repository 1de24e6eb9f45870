#pragma once

// The fixture the Xen driver's tests share: the driver on a fake Xen 4.17 over the simulated
// hypervisor, and the checks that nothing of vmitap's is left behind and that Xen saw
// nothing it would refuse.

#include "drivers/error.hpp"
#include "drivers/xen/xen_driver.hpp"
#include "tests/support/fake_xen.hpp"
#include "tests/support/sim_fixture.hpp"

#include <gmock/gmock.h>

#include <poll.h>

namespace vmitap::testing {

inline std::string lines(const std::vector<std::string>& v) {
  std::string out;
  for (auto& s : v)
    out += "  " + s + "\n";
  return out;
}

class xen_driver_test : public ::testing::Test {
protected:
  std::shared_ptr<sim::hypervisor> hv = std::make_shared<sim::hypervisor>();
  fake_xen xen{hv};
  std::shared_ptr<drv::driver> driver;
  std::shared_ptr<sim::domain> dom;

  void TearDown() override {
    driver.reset();
    EXPECT_TRUE(xen.violations().empty()) << "Xen would not have let this pass:\n"
                                          << lines(xen.violations());
  }

  void open() {
    auto d = xen::open_xen_driver(xen.api());
    ASSERT_TRUE(d) << render(d.error());
    driver = *d;
  }

  void boot(uint32_t vcpus = 2, std::string name = "guest") {
    auto cfg = small_domain(vcpus);
    cfg.name = std::move(name);
    auto made = hv->create_domain(cfg);
    ASSERT_TRUE(made) << render(made.error());
    dom = *made;
  }

  std::unique_ptr<drv::domain_session> attach() {
    auto s = driver->attach(dom->id());
    EXPECT_TRUE(s) << render(s.error());
    return s ? std::move(*s) : nullptr;
  }

  /// Boots a guest, attaches, and has every VCPU run in a new view (`view`) in which the
  /// guest's code lacks Execute: every fetch traps.
  std::unique_ptr<drv::domain_session> trapping_session(uint32_t vcpus) {
    boot(vcpus);
    open();
    auto s = attach();
    if (!s)
      return nullptr;
    auto v = s->create_view(drv::page_access::rwx);
    EXPECT_TRUE(v) << render(v.error());
    if (!v)
      return nullptr;
    view = *v;
    EXPECT_FALSE(s->switch_all(view));
    deny_execute(*s, view, dom->code());
    return s;
  }
  drv::view_id view = 0;  ///< trapping_session's

  /// Nothing of vmitap's is left on the domain, and the sim agrees nothing was lost.
  void expect_clean() {
    auto id = dom->id();
    EXPECT_FALSE(xen.monitor_enabled(id));
    EXPECT_FALSE(xen.altp2m_on(id));
    EXPECT_FALSE(xen.singlestep_monitor_on(id));
    EXPECT_EQ(xen.controller_pauses(id), 0u);
    auto inv = dom->check();
    EXPECT_EQ(inv.unanswered, 0u);
    EXPECT_EQ(inv.pages_changed, 0u);
    EXPECT_EQ(inv.answered_by_detach, 0u) << "every request is answered through the ring";
    EXPECT_EQ(inv.requests_raised, inv.requests_answered + inv.dropped_by_death);
  }

  static void deny_execute(drv::domain_session& s, drv::view_id view, const sim::program& code,
                           drv::page_access value = drv::page_access::rw) {
    std::vector<drv::access_change> changes;
    for (auto gfn = code.first_code_gfn(); gfn <= code.last_code_gfn(); ++gfn)
      changes.push_back({gfn, value});
    auto err = s.set_access(view, changes);
    ASSERT_FALSE(err) << render(err);
  }
};

/// Sleeps on the ring's descriptor as a poller does, then takes what is there.
inline size_t wait_and_take(drv::event_ring& ring, std::span<drv::event> out) {
  for (int i = 0; i < 2000; ++i) {
    if (auto n = ring.take(out))
      return n;
    if (ring.arm().pending)
      continue;
    pollfd p{ring.fd(), POLLIN, 0};
    if (poll(&p, 1, 5) == 1)
      ring.acknowledge();
  }
  return 0;
}

}  // namespace vmitap::testing
