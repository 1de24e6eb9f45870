// The actor protocols, run deterministically: CAF's test coordinator executes messages only
// when the test says so, and the simulated hypervisor runs in manual mode.

#include "actors/breakpoint_registry.hpp"
#include "actors/ept_controller.hpp"
#include "actors/vcpu.hpp"
#include "drivers/sim/sim_driver.hpp"
#include "engine/error.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/scheduler/test_coordinator.hpp>

#include <gtest/gtest.h>

using namespace vmitap;
using drv::page_access;

namespace {

struct test_config : caf::actor_system_config {
  test_config() { set("scheduler.policy", caf::atom("testing")); }
};

class actor_protocol_test : public ::testing::Test {
protected:
  test_config cfg;
  caf::actor_system sys{cfg};
  caf::scheduler::test_coordinator& sched
    = dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler());
  std::shared_ptr<sim::hypervisor> hv = std::make_shared<sim::hypervisor>(
    sim::hypervisor_config{.threaded = false, .slice_instructions = 64});
  sim::sim_driver driver{hv};
  std::shared_ptr<sim::domain> dom;
  std::shared_ptr<drv::domain_session> session;
  drv::view_id view = 0;
  ept_controller_actor controller;
  std::vector<vcpu_actor> vcpus;
  breakpoint_registry_actor registry;
  metrics exported{"test"};
  std::shared_ptr<domain_metrics> dm;

  /// Runs every queued message (and expired timeout) until nothing is left.
  void run() {
    do
      sched.run();
    while (sched.trigger_timeouts() > 0);
  }

  /// Runs actors and guest alternately until both are idle.
  void drive() {
    do
      run();
    while (hv->run_pending() > 0);
  }

  /// Spawns a one-off client actor. It takes a (dummy) argument: CAF 0.17 binds a reference
  /// through a null pointer for argument-less function actors, which UBSan reports.
  template <class F>
  void spawn_client(F body) {
    sys.spawn([body](caf::event_based_actor* self, int) { body(self); }, 0);
  }

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

  void boot(step_mode mode, page_access code_access = page_access::rwx, uint64_t budget = 0,
            uint32_t vcpu_count = 2) {
    sim::domain_config dc;
    dc.name = "unit";
    dc.vcpus = vcpu_count;
    dc.memory_mib = 16;
    dc.code_access = code_access;
    dc.instructions_per_vcpu = budget;
    dc.workload.functions = 24;
    dom = hv->create_domain(dc);
    session = std::move(*driver.attach(dom->id()));
    dm = exported.attach_domain(dom->info());
    controller = sys.spawn(ept_controller, session, dm);
    view = *ask<drv::view_id>(controller, create_atom::value, page_access::rwx);
    ASSERT_FALSE(session->switch_all(view));
    drv::event_handlers handlers;
    for (drv::vcpu_id i = 0; i < dc.vcpus; ++i) {
      vcpu_config vc{dom->id(), std::make_shared<const std::string>("unit"), i, session, mode,
                     view, {}, dm};
      auto v = sys.spawn(vcpu, vc);
      vcpus.push_back(v);
      handlers.per_vcpu.push_back([v](const drv::event& ev) {
        caf::anon_send(v, event_atom::value, ev, seen_now());
      });
    }
    handlers.orphan = [](const drv::event&) {};
    registry = sys.spawn(breakpoint_registry, controller, vcpus, std::vector{view},
                         dom->info().max_gfn, dm);
    run();
    ASSERT_FALSE(session->start_events(std::move(handlers)));
  }

  caf::expected<uint64_t> add(std::string name, uint64_t pa) {
    return ask<uint64_t>(registry, add_atom::value, breakpoint_spec{pa, view, std::move(name), {}});
  }

  page_access access_of(uint64_t pa) { return *session->get_access(view, drv::gfn_of(pa)); }

  vcpu_stats stats() {
    vcpu_stats total;
    for (auto& v : vcpus)
      total += *ask<vcpu_stats>(v, drain_atom::value);
    return total;
  }

  void TearDown() override {
    for (auto& v : vcpus)
      caf::anon_send_exit(v, caf::exit_reason::user_shutdown);
    if (registry)
      caf::anon_send_exit(registry, caf::exit_reason::user_shutdown);
    if (controller)
      caf::anon_send_exit(controller, caf::exit_reason::user_shutdown);
    run();
    if (session)
      session->detach();
  }
};

}  // namespace

TEST_F(actor_protocol_test, two_breakpoints_on_a_page_restore_the_previous_access_not_rwx) {
  boot(step_mode::fast, page_access::rx);
  auto f0 = dom->code().functions()[0];
  auto a = dom->code().at(f0.first).pa;
  auto b = dom->code().at(f0.first + 1).pa;
  ASSERT_EQ(drv::gfn_of(a), drv::gfn_of(b));
  auto id_a = add("a", a);
  auto id_b = add("b", b);
  ASSERT_TRUE(id_a && id_b);
  EXPECT_EQ(access_of(a), page_access::r) << "Execute removed, read kept";
  ASSERT_TRUE(ask<ok_atom>(registry, remove_atom::value, *id_a));
  EXPECT_EQ(access_of(a), page_access::r) << "still monitored for b";
  ASSERT_TRUE(ask<ok_atom>(registry, remove_atom::value, *id_b));
  EXPECT_EQ(access_of(a), page_access::rx) << "the access it had before, not rwx";
  EXPECT_EQ(code_of(ask<ok_atom>(registry, remove_atom::value, *id_b).error()),
            ec::breakpoint_not_found);
}

TEST_F(actor_protocol_test, changes_arriving_together_go_out_in_one_batched_call) {
  boot(step_mode::fast);
  std::vector<std::optional<caf::expected<uint64_t>>> results(6);
  spawn_client([&](caf::event_based_actor* self) {
    for (size_t i = 0; i < results.size(); ++i) {
      auto pa = drv::pa_of(dom->code().first_code_gfn() + i);
      self->request(caf::actor_cast<caf::actor>(registry), std::chrono::seconds(10),
                    add_atom::value, breakpoint_spec{pa, view, "bp" + std::to_string(i), {}})
        .then([&, i](uint64_t id) { results[i] = id; },
              [&, i](caf::error& e) { results[i] = e; });
    }
  });
  run();
  for (auto& r : results)
    ASSERT_TRUE(r && *r);
  auto [calls, changes, failures]
    = std::tuple{0ull, 0ull, 0ull};
  spawn_client([&](caf::event_based_actor* self) {
    self->request(caf::actor_cast<caf::actor>(controller), std::chrono::seconds(10),
                  status_atom::value)
      .then([&](uint64_t c, uint64_t n, uint64_t f) {
        calls = c;
        changes = n;
        failures = f;
      });
  });
  run();
  EXPECT_EQ(calls, 1u) << "six pages, one set_access_multi";
  EXPECT_EQ(changes, 6u);
  EXPECT_EQ(failures, 0u);
}

TEST_F(actor_protocol_test, failing_access_change_is_reported_and_registry_agrees_with_guest) {
  boot(step_mode::fast);
  auto first = dom->code().first_code_gfn();
  dom->fail_access_changes(1, 1, EIO);  // the batch applies one page, then fails
  std::vector<std::optional<caf::expected<uint64_t>>> results(3);
  spawn_client([&](caf::event_based_actor* self) {
    for (size_t i = 0; i < results.size(); ++i)
      self->request(caf::actor_cast<caf::actor>(registry), std::chrono::seconds(10),
                    add_atom::value,
                    breakpoint_spec{drv::pa_of(first + i), view, "bp" + std::to_string(i), {}})
        .then([&, i](uint64_t id) { results[i] = id; },
              [&, i](caf::error& e) { results[i] = e; });
  });
  run();
  ASSERT_TRUE(results[0] && *results[0]) << "applied before the failure: armed";
  for (size_t i = 1; i < 3; ++i) {
    ASSERT_TRUE(results[i] && !*results[i]);
    EXPECT_NE(render(results[i]->error()).find("errno 5"), std::string::npos);
  }
  auto listed = *ask<std::vector<breakpoint_ptr>>(registry, list_atom::value);
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0]->spec.name, "bp0");
  EXPECT_EQ(*session->get_access(view, first), page_access::rw);
  EXPECT_EQ(*session->get_access(view, first + 1), page_access::rwx);
  EXPECT_EQ(*session->get_access(view, first + 2), page_access::rwx);
}

TEST_F(actor_protocol_test, invalid_breakpoints_are_rejected_with_their_reason) {
  boot(step_mode::fast);
  auto pa = dom->code().functions()[0].entry_pa;
  ASSERT_TRUE(add("x", pa));
  EXPECT_EQ(code_of(add("x", pa + 1).error()), ec::duplicate_breakpoint);
  EXPECT_EQ(code_of(add("far", drv::pa_of(dom->info().max_gfn + 1)).error()),
            ec::gfn_out_of_range);
  EXPECT_EQ(code_of(ask<uint64_t>(registry, add_atom::value, breakpoint_spec{pa, 0, "v0", {}})
                      .error()),
            ec::no_such_view);
}

TEST_F(actor_protocol_test, event_for_a_removed_breakpoint_is_stale_answered_and_no_hit) {
  boot(step_mode::fast, page_access::rwx, 5000, 1);
  auto pa = dom->code().functions()[0].entry_pa;
  ASSERT_TRUE(add("bp", pa));
  // The registry has published the removal, the restore has not reached the guest yet.
  auto table = std::make_shared<breakpoint_table>();
  table->version = 1000;
  table->views = {view};
  caf::anon_send(vcpus[0], snapshot_atom::value, table_ptr{table});
  run();
  drive();  // the VCPU keeps trapping on the still-restricted page until its budget ends
  ASSERT_TRUE(dom->halted());
  auto s = stats();
  EXPECT_GE(s.stale, 1u);
  EXPECT_EQ(s.hits, 0u);
  EXPECT_EQ(s.events, s.stale);
  EXPECT_EQ(dm->stale().Value(), double(s.stale)) << "vmitap_stale_events_total agrees";
  EXPECT_GT(dom->executions(pa, view), 0u) << "the address did run, unarmed";
  EXPECT_EQ(dom->check().unanswered, 0u);
  EXPECT_EQ(dom->check().requests_answered, s.events);
}

class actor_step_modes : public actor_protocol_test,
                         public ::testing::WithParamInterface<step_mode> {};

TEST_P(actor_step_modes, hits_and_neighbours_are_exact_deterministically) {
  boot(GetParam(), page_access::rwx, 20000);
  auto f = dom->code().functions();
  auto hot = add("hot", f[0].entry_pa);
  auto mid = add("mid", dom->code().at(f[1].first + 1).pa);
  ASSERT_TRUE(hot && mid);
  drive();
  ASSERT_TRUE(dom->halted());
  auto s = stats();
  auto listed = *ask<std::vector<breakpoint_ptr>>(registry, list_atom::value);
  uint64_t truth_total = 0;
  for (auto& bp : listed) {
    auto truth = dom->executions(bp->spec.pa, view);
    EXPECT_EQ(bp->hits->load(), truth) << bp->spec.name;
    truth_total += truth;
  }
  EXPECT_GT(truth_total, 0u);
  EXPECT_EQ(s.hits, truth_total);
  EXPECT_GT(s.neighbours, 0u);
  EXPECT_EQ(s.stale + s.spurious + s.malformed + s.respond_failures, 0u);
  auto inv = dom->check();
  EXPECT_EQ(inv.unanswered, 0u);
  EXPECT_EQ(inv.requests_raised, inv.requests_answered);
  EXPECT_EQ(inv.requests_raised, s.events);
}

INSTANTIATE_TEST_SUITE_P(both, actor_step_modes,
                         ::testing::Values(step_mode::classic, step_mode::fast),
                         [](auto& info) { return std::string(to_string(info.param)); });
