#pragma once

// Deterministic actor tests: CAF's test coordinator runs messages only when the test says
// so, and the simulated hypervisor runs in manual mode.

#include "actors/control/breakpoint_registry.hpp"
#include "actors/control/ept_controller.hpp"
#include "tests/support/sim_fixture.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <caf/send.hpp>

namespace vmitap::testing {

struct test_config : caf::actor_system_config {
  test_config() { set("scheduler.policy", caf::atom("testing")); }
};

class actor_fixture : public sim_fixture {
protected:
  test_config cfg;
  caf::actor_system sys{cfg};
  caf::scheduler::test_coordinator& sched =
    dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler());

  /// Runs every queued message until nothing is left. Time stands still: no timeout fires.
  void run() { sched.run(); }

  /// Runs what is queued, then moves the clock on by `d`, firing every timeout due by then
  /// (in the order they are due) and running what each sends. A timeout due later stays.
  void run(caf::timespan d) {
    sched.run();
    sched.advance_time(d);
    sched.run();
  }

  /// Spawns a one-off client actor. It takes a (dummy) argument: CAF 0.17 binds a reference
  /// through a null pointer for argument-less function actors, which UBSan reports.
  template <class F>
  void spawn_client(F body) {
    sys.spawn([body](caf::event_based_actor* self, int) { body(self); }, 0);
  }

  /// Sends a request and runs the actors until it is answered.
  template <class T, class Handle, class... Ts>
  caf::expected<T> ask(const Handle& h, Ts... xs) {
    std::optional<caf::expected<T>> result;
    spawn_client([&, h](caf::event_based_actor* self) {
      self->request(caf::actor_cast<caf::actor>(h), std::chrono::seconds(10), xs...)
        .then([&](T& x) { result = std::move(x); }, [&](caf::error& e) { result = e; });
    });
    run();
    if (!result)
      return make_error(ec::timeout, "no answer");
    return std::move(*result);
  }
};

/// A registry and a controller over a sim domain with one monitored view.
class registry_fixture : public actor_fixture {
protected:
  std::shared_ptr<drv::domain_session> shared;
  domain_ptr domain;
  /// The controller records the pages it changed here (the teardown watchdog reads it).
  teardown_watch_ptr watch = std::make_shared<teardown_watch>();
  drv::view_id view = 0;
  ept_controller_actor controller;
  breakpoint_registry_actor registry;

  void boot_registry(sim::domain_config dc = small_domain(2)) {
    boot(std::move(dc));
    shared = std::shared_ptr<drv::domain_session>(std::move(session));
    session.reset();
    domain = std::make_shared<monitored_domain>(dom->info(), 1);
    controller = sys.spawn(ept_controller, ept_controller_config{shared, domain, watch});
    auto v = ask<drv::view_id>(controller, create_atom_v, drv::page_access::rwx);
    ASSERT_TRUE(v);
    view = *v;
    ASSERT_FALSE(shared->switch_all(view));
    registry =
      sys.spawn(breakpoint_registry,
                breakpoint_registry_config{
                  controller, domain, {{"main", view}}, dom->info().max_gfn, shared, kernel_cr3()});
    run();
  }

  /// The tables virtual breakpoints are walked through: VCPU 0's (every sim process maps
  /// the kernel).
  uint64_t kernel_cr3() {
    auto regs = shared->vcpu_registers(0);
    return regs ? regs->cr3 : 0;
  }

  breakpoint_def spec(std::string name, uint64_t pa) {
    return breakpoint_def::at(std::move(name), pa);
  }

  caf::expected<batch_result> add(std::vector<breakpoint_def> defs) {
    return ask<batch_result>(registry, add_atom_v, std::move(defs), armed_by::attach);
  }
  caf::expected<batch_result> remove(std::vector<std::string> names) {
    return ask<batch_result>(registry, remove_atom_v, std::move(names));
  }
  drv::page_access access_of(uint64_t pa) {
    drv::page_access out{};
    auto gfn = drv::gfn_of(pa);
    EXPECT_FALSE(shared->get_access(view, std::span{&gfn, 1}, std::span{&out, 1}));
    return out;
  }

  void TearDown() override {
    if (registry)
      caf::anon_send_exit(registry, caf::exit_reason::user_shutdown);
    if (controller)
      caf::anon_send_exit(controller, caf::exit_reason::user_shutdown);
    run();
    if (shared)
      shared->detach();
  }
};

}  // namespace vmitap::testing
