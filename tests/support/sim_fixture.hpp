#pragma once

// A simulated domain in manual mode, attached, with its ring: tests play the monitor's side
// by hand, one slice at a time.

#include "drivers/error.hpp"
#include "drivers/sim/sim_driver.hpp"

#include <gtest/gtest.h>

#include <array>
#include <cstring>

#include <deque>

namespace vmitap::testing {

inline sim::domain_config small_domain(uint32_t vcpus = 1, uint64_t seed = 7) {
  sim::domain_config cfg;
  cfg.name = "test";
  cfg.vcpus = vcpus;
  cfg.memory_mib = 16;
  cfg.workload.seed = seed;
  cfg.workload.functions = 24;
  return cfg;
}

class sim_fixture : public ::testing::Test {
protected:
  std::shared_ptr<sim::hypervisor> hv = std::make_shared<sim::hypervisor>(
    sim::hypervisor_config{.threaded = false, .slice_instructions = 64});
  sim::sim_driver driver{hv};
  std::shared_ptr<sim::domain> dom;
  std::unique_ptr<drv::domain_session> session;
  drv::event_ring* ring = nullptr;

  void boot(sim::domain_config cfg = small_domain()) {
    auto made = hv->create_domain(std::move(cfg));
    ASSERT_TRUE(made) << render(made.error());
    dom = *made;
    auto s = driver.attach(dom->id());
    ASSERT_TRUE(s) << render(s.error());
    session = std::move(*s);
    auto r = session->start_events();
    ASSERT_TRUE(r) << render(r.error());
    ring = *r;
  }

  /// A guest-physical word, through the session (as a monitor reads it).
  uint64_t read64(uint64_t pa) {
    std::array<std::byte, 8> b{};
    auto err = session->read_physical(pa, b);
    EXPECT_FALSE(err) << render(err);
    uint64_t v;
    std::memcpy(&v, b.data(), 8);
    return v;
  }

  drv::view_id monitored_view() {
    auto v = session->create_view(drv::page_access::rwx);
    EXPECT_TRUE(v);
    EXPECT_FALSE(session->switch_all(*v));
    return *v;
  }

  void set(drv::view_id view, drv::gfn_t first, drv::gfn_t last, drv::page_access value) {
    std::vector<drv::access_change> changes;
    for (auto gfn = first; gfn <= last; ++gfn)
      changes.push_back({gfn, value});
    ASSERT_FALSE(session->set_access(view, changes));
  }

  void deny_execute_on_all_code(drv::view_id view) {
    set(view, dom->code().first_code_gfn(), dom->code().last_code_gfn(), drv::page_access::rw);
  }

  drv::page_access access(drv::view_id view, drv::gfn_t gfn) {
    drv::page_access out{};
    auto err = session->get_access(view, std::span{&gfn, 1}, std::span{&out, 1});
    EXPECT_FALSE(err) << render(err);
    return out;
  }

  /// Every request in the ring now.
  std::vector<drv::event> take_all() {
    std::vector<drv::event> out(64);
    out.resize(ring->take(out));
    return out;
  }

  /// Runs slices until a request is in the ring; fails if the guest goes idle first.
  drv::event next_event(size_t max_slices = 100000) {
    std::vector<drv::event> buf(1);
    for (size_t i = 0; i < max_slices; ++i) {
      if (ring->take(buf) == 1)
        return buf[0];
      if (hv->run_pending(1) == 0)
        break;
    }
    if (ring->take(buf) == 1)
      return buf[0];
    ADD_FAILURE() << "no event raised";
    return {};
  }

  void respond(const drv::event& ev, uint32_t extra_flags, drv::view_id view = 0,
               drv::view_id fast_return = 0) {
    auto rsp = drv::make_response(ev);
    rsp.flags |= extra_flags;
    rsp.view = view;
    rsp.fast_return_view = fast_return;
    auto r = ring->give(std::span{&rsp, 1});
    ASSERT_EQ(r.failed, 0u) << render(r.first);
  }

  caf::error give(const drv::response& rsp) { return ring->give(std::span{&rsp, 1}).first; }

  /// Steps over a trapped instruction the fast way, as the engine does.
  void fast_step(const drv::event& ev, drv::view_id back) {
    respond(ev, drv::flag::alternate_p2m | drv::flag::fast_singlestep, 0, back);
  }
};

}  // namespace vmitap::testing
