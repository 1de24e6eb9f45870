// The hot path: one drain takes a batch from a ring, answers all of it with one notify,
// counts everything, and stays exact against the sim's ground truth in every step mode.

#include "actors/hotpath/poller.hpp"
#include "tests/support/actor_fixture.hpp"
#include "tests/support/fake_ring.hpp"

#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/send.hpp>

#include <mutex>
#include <thread>

using namespace vmitap;
using namespace vmitap::testing;
namespace flag = drv::flag;

namespace {

constexpr drv::view_id view = 1;

struct path_on_fake_ring : ::testing::Test {
  fake_ring ring;
  domain_ptr domain = std::make_shared<monitored_domain>(drv::domain_info{7, "d", 2}, 1);
  table_builder builder{{view}};
  breakpoint_ptr bp;
  std::unique_ptr<event_path> path;

  void SetUp() override {
    bp = make_breakpoint(breakpoint_def::at("bp", 0x100010), view, armed_by::attach);
    builder.add(bp);
    domain->table().publish(builder.build());
    event_path_config cfg;
    cfg.domain = domain;
    cfg.ring = &ring;
    cfg.mode = step_mode::fast;
    cfg.homes = {view, view};
    path = std::make_unique<event_path>(cfg);
  }

  // Whatever the test did, every request the path took got exactly one answer.
  void TearDown() override { answered_once(*path); }

  void answered_once(event_path& p) {
    p.release_held();
    EXPECT_TRUE(ring.each_request_answered_once());
  }

  void request(drv::vcpu_id vcpu, uint64_t pa,
               drv::event_reason reason = drv::event_reason::mem_access,
               drv::page_access attempted = drv::page_access::x) {
    drv::event ev;
    ev.vcpu = vcpu;
    ev.view = view;
    ev.reason = reason;
    ev.mem = {drv::gfn_of(pa), pa & drv::page_mask, 0, attempted, false};
    ring.requests.push_back(ev);
  }
};

}  // namespace

TEST_F(path_on_fake_ring, a_batch_is_answered_in_one_give_one_response_per_request) {
  request(0, 0x100010);  // hit
  request(1, 0x100018);  // page neighbour
  request(1, 0x200000);  // stale: a managed view, a page not monitored
  request(5, 0x100010);  // a VCPU the domain does not have
  request(0, 0x100010, drv::event_reason(0x7f));
  request(1, 0x100010, drv::event_reason::mem_access, drv::page_access::r);  // a data access
  ASSERT_EQ(path->drain(), 6u);
  EXPECT_EQ(ring.gives, 1u);
  ASSERT_EQ(ring.responses.size(), 6u);
  EXPECT_EQ(ring.responses[3].vcpu, 5u) << "the orphan is answered too";
  EXPECT_EQ(ring.responses[3].flags, flag::vcpu_paused);
  auto& c = domain->counters();
  EXPECT_EQ(c.vcpus[0].hits.get(), 1u);
  EXPECT_EQ(c.vcpus[1].neighbours.get(), 1u);
  EXPECT_EQ(c.vcpus[1].stale.get(), 1u);
  EXPECT_EQ(c.vcpus[1].data_accesses.get(), 1u);
  EXPECT_EQ(c.orphans.get(), 1u);
  EXPECT_EQ(c.vcpus[0].malformed[size_t(malformed_cause::unknown_reason)].get(), 1u);
  EXPECT_EQ(c.vcpus[0].mem_access.get() + c.vcpus[0].other.get() + c.vcpus[1].mem_access.get(), 5u);
  uint64_t handled = 0;
  for (size_t i = 0; i <= c.handling.bounds().size(); ++i)
    handled += c.handling.bucket(i);
  EXPECT_EQ(handled, 6u) << "every request's handling time is recorded";
  EXPECT_EQ(domain->table().load()->find(view, 0x100)[0].bp->hits.load(), 1u);
}

// Found by the fault campaign (issue 13): the answers to a domain that died meanwhile were
// logged as "a VCPU may stay paused" and counted as failures, so its summary was NOT VERIFIED.
TEST_F(path_on_fake_ring, answers_a_dead_domain_refuses_are_not_failures) {
  ring.refuse = 1;
  ring.refusal = ec::domain_dead;
  request(0, 0x100010);
  path->drain();
  EXPECT_EQ(domain->counters().respond_failures.get(), 0u);
}

TEST_F(path_on_fake_ring, a_newer_table_is_used_from_the_next_drain_on) {
  request(0, 0x100010);
  path->drain();
  builder.remove(bp.get());
  domain->table().publish(builder.build());
  request(0, 0x100010);
  path->drain();
  EXPECT_EQ(domain->counters().vcpus[0].hits.get(), 1u);
  EXPECT_EQ(domain->counters().vcpus[0].stale.get(), 1u);
}

// Regression (issue 8): a refused response was a stats counter only; a VCPU may stay paused.
TEST_F(path_on_fake_ring, refused_responses_are_counted_and_logged_once_per_log_interval) {
  auto log = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(16);
  auto previous = spdlog::default_logger();
  spdlog::set_default_logger(std::make_shared<spdlog::logger>("test", log));
  ring.refuse = 3;
  for (int i = 0; i < 3; ++i) {
    request(0, 0x100010);
    path->drain();
  }
  request(0, 0x100010);
  path->drain();  // accepted: the streak ends, and a new one within the interval is not logged
  ring.refuse = 1;
  request(0, 0x100010);
  path->drain();
  spdlog::set_default_logger(previous);
  EXPECT_EQ(domain->counters().respond_failures.get(), 4u);
  auto lines = log->last_formatted();
  ASSERT_EQ(lines.size(), 1u) << "one line per log interval (10 s), however the causes come";
  EXPECT_NE(lines[0].find("may stay paused"), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find("refused by the test"), std::string::npos) << lines[0];
}

namespace {

class poller_on_sim : public registry_fixture, public ::testing::WithParamInterface<step_mode> {
protected:
  poller pol{{std::chrono::nanoseconds(0), false}};
  std::shared_ptr<event_path> path;

  void start(step_mode mode) {
    event_path_config cfg;
    cfg.domain = domain;
    cfg.session = shared;
    cfg.ring = ring;
    cfg.mode = mode;
    cfg.homes.assign(dom->info().vcpus, this->view);
    path = std::make_shared<event_path>(cfg);
    pol.add(path);
  }

  /// Runs actors, guest and poller in turn until all three are idle.
  void drive() {
    for (bool busy = true; busy;) {
      run();
      busy = hv->run_pending() > 0;
      busy |= pol.run_once(false);
    }
  }
};

}  // namespace

TEST_P(poller_on_sim, hits_and_neighbours_are_exact_deterministically) {
  auto dc = small_domain(2);
  dc.instructions_per_vcpu = 20000;
  boot_registry(dc);
  start(GetParam());
  auto f = dom->code().functions();
  ASSERT_EQ(add({spec("hot", f[0].entry_pa), spec("mid", dom->code().at(f[1].first + 1).pa)})->ok,
            2u);
  drive();
  ASSERT_TRUE(dom->halted());
  uint64_t truth_total = 0, hits = 0, neighbours = 0, singlesteps = 0, events = 0;
  domain->table().load()->for_each([&](const breakpoint_ptr& bp) {
    auto truth = dom->executions(bp->pa(), view);
    EXPECT_EQ(bp->hits.load(), truth) << bp->name;
    truth_total += truth;
  });
  auto& c = domain->counters();
  for (uint32_t i = 0; i < c.vcpu_count; ++i) {
    hits += c.vcpus[i].hits.get();
    neighbours += c.vcpus[i].neighbours.get();
    singlesteps += c.vcpus[i].singlestep.get();
    events += c.vcpus[i].mem_access.get() + c.vcpus[i].singlestep.get();
  }
  EXPECT_GT(truth_total, 0u);
  EXPECT_EQ(hits, truth_total);
  EXPECT_GT(neighbours, 0u);
  if (GetParam() == step_mode::classic)
    EXPECT_EQ(singlesteps, hits + neighbours) << "two events per trap";
  else
    EXPECT_EQ(singlesteps, 0u) << "one event per trap";
  auto inv = dom->check();
  EXPECT_EQ(inv.unanswered, 0u);
  EXPECT_EQ(inv.requests_raised, inv.requests_answered);
  EXPECT_EQ(inv.requests_raised, events);
  bool released = false;
  pol.release(path.get(), [&] { released = true; });
  pol.run_once(false);
  EXPECT_TRUE(released);
}

INSTANTIATE_TEST_SUITE_P(every, poller_on_sim,
                         ::testing::Values(step_mode::classic, step_mode::fast, step_mode::emulate),
                         [](auto& info) { return std::string(to_string(info.param)); });

namespace {

/// A path whose hits go to a handler: the relay is a test actor that only collects the calls,
/// and the path's "poller" is a queue the test runs by hand.
struct path_with_handler : path_on_fake_ring {
  caf::actor_system_config sys_cfg;
  caf::actor_system sys{sys_cfg};
  std::mutex mutex;
  std::vector<handler_call> calls;  // guarded by mutex
  std::vector<std::function<void()>> posted;
  handler_relay_actor relay;
  std::shared_ptr<event_path> held_path;

  void SetUp() override {
    auto def = breakpoint_def::at("bp", 0x100010);
    def.options.handler = handler_binding{"h"};
    bp = make_breakpoint(def, view, armed_by::attach);
    builder.add(bp);
    domain->table().publish(builder.build());
    event_path_config cfg;
    cfg.domain = domain;
    cfg.ring = &ring;
    cfg.mode = step_mode::fast;
    cfg.homes = {view, view};
    // The int: see actor_fixture's spawn_client (CAF 0.17 and argument-less function actors).
    cfg.relay = sys.spawn(
      [this](handler_relay_actor::pointer, int) -> handler_relay_actor::behavior_type {
        return {[this](hit_atom, handler_call& call) {
          std::lock_guard g{mutex};
          calls.push_back(std::move(call));
        }};
      },
      0);
    relay = cfg.relay;
    held_path = std::make_shared<event_path>(cfg);
    held_path->bind([this](std::function<void()> fn) { posted.push_back(std::move(fn)); });
  }

  void TearDown() override {
    answered_once(*held_path);
    caf::anon_send_exit(relay, caf::exit_reason::user_shutdown);
  }

  handler_call next_call(size_t k) {
    EXPECT_TRUE(eventually([&] {
      std::lock_guard g{mutex};
      return calls.size() > k;
    }));
    std::lock_guard g{mutex};
    return calls.at(k);
  }

  void run_posted() {
    auto work = std::move(posted);
    posted.clear();
    for (auto& fn : work)
      fn();
  }

  template <class Cond>
  static bool eventually(Cond&& cond) {
    for (int i = 0; i < 6000 && !cond(); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return cond();
  }
};

}  // namespace

TEST_F(path_with_handler,
       a_held_response_is_given_once_by_its_decision_and_stale_ones_are_ignored) {
  request(0, 0x100010);  // a hit: held for the handler
  request(1, 0x100018);  // a neighbour: answered in the batch
  ASSERT_EQ(held_path->drain(), 2u);
  ASSERT_EQ(ring.responses.size(), 1u);
  EXPECT_EQ(ring.responses[0].vcpu, 1u);
  auto call = next_call(0);
  EXPECT_EQ(call.hit.vcpu, 0u);
  EXPECT_EQ(call.hit.bp, bp);
  EXPECT_EQ(call.handler->name, "h");

  held_path->decided(0, call.token + 1, handler_decision::resume());  // not this hit's token
  run_posted();
  EXPECT_EQ(ring.responses.size(), 1u);

  auto regs = call.hit.regs;
  regs.rip = 0xffffffff80104000;
  regs.rax = 9;
  held_path->decided(0, call.token, handler_decision::with(regs));
  run_posted();
  ASSERT_EQ(ring.responses.size(), 2u);
  auto& rsp = ring.responses[1];
  EXPECT_EQ(rsp.vcpu, 0u);
  EXPECT_EQ(rsp.flags, flag::vcpu_paused | flag::set_registers) << "a new rip: no step-over";
  EXPECT_EQ(rsp.regs.rip, regs.rip);
  EXPECT_EQ(rsp.regs.rax, 9u);

  held_path->decided(0, call.token, handler_decision::resume());  // a second answer
  run_posted();
  EXPECT_EQ(ring.responses.size(), 2u);
}

TEST_F(path_with_handler, a_decision_that_keeps_rip_steps_over_with_the_new_registers) {
  request(0, 0x100010);
  held_path->drain();
  auto call = next_call(0);
  auto regs = call.hit.regs;
  regs.rdi = 0x1234;
  held_path->decided(0, call.token, handler_decision::with(regs));
  run_posted();
  ASSERT_EQ(ring.responses.size(), 1u);
  EXPECT_EQ(ring.responses[0].flags,
            flag::vcpu_paused | flag::alternate_p2m | flag::fast_singlestep | flag::set_registers);
  EXPECT_EQ(ring.responses[0].regs.rdi, 0x1234u);
}

TEST_F(path_with_handler, a_release_answers_what_is_held_and_later_decisions_are_ignored) {
  request(0, 0x100010);
  request(0, 0x100010);  // a ring claiming the waiting VCPU trapped again: answered at once
  held_path->drain();
  ASSERT_EQ(ring.responses.size(), 1u);
  auto call = next_call(0);
  held_path->release_held();
  ASSERT_EQ(ring.responses.size(), 2u);
  EXPECT_EQ(ring.responses[1].vcpu, 0u);
  EXPECT_EQ(ring.responses[1].flags,
            flag::vcpu_paused | flag::alternate_p2m | flag::fast_singlestep)
    << "the step-over it would have had without a handler";
  held_path->decided(0, call.token, handler_decision::resume());
  run_posted();
  EXPECT_EQ(ring.responses.size(), 2u);
  std::lock_guard g{mutex};
  EXPECT_EQ(calls.size(), 1u) << "only the first of the two was sent to the handler";
}
