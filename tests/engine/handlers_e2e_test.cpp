// Hit handlers end to end, on the threaded sim: a handler's decision is what the guest does
// (the sim's ground truth shows the calls it returned from), a handler that never answers
// holds only its own VCPU and only until the deadline, and a handler that throws leaves no
// VCPU paused. Every scenario also checks hits against ground truth and the invariants.

#include "tests/support/metric_values.hpp"
#include "tests/support/scenario.hpp"

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <caf/typed_response_promise.hpp>

#include <sys/resource.h>
#include <unistd.h>
#include <atomic>
#include <mutex>
#include <sstream>

using namespace vmitap;
using namespace vmitap::testing;

namespace {

constexpr uint64_t early_rax = 0x5eed;
/// For tests whose subject is not the deadline: the handler's own answer must decide every
/// hit, however slowly a loaded machine runs it (a nice-10 handler thread beside other tests).
constexpr std::chrono::microseconds no_timeout = std::chrono::seconds(10);

double metric(engine& eng, const std::string& family, const std::string& domain) {
  return metric_value(eng.collect(), family, {{"domain", domain}}).value_or(0);
}

capture_list return_address_capture() {
  auto specs = std::make_shared<std::vector<capture_spec>>();
  specs->push_back({"ret", capture_spec::kind::value,
                    *parse_address_expr("[rsp]", drv::calling_convention::sysv).expr, 0, "[rsp]"});
  return {std::move(specs)};
}

class handlers_e2e : public ::testing::TestWithParam<step_mode> {};

TEST_P(handlers_e2e, a_handler_that_returns_early_makes_the_guest_skip_the_call) {
  scenario s;
  sim::domain_config dc;
  dc.name = "guest";
  dc.vcpus = 2;
  dc.instructions_per_vcpu = 150'000;
  dc.workload.seed = 31;
  dc.record_calls = true;
  auto dom = *s.hv->create_domain(dc);
  s.domains.push_back(dom);

  // The handler returns from every call that has a caller; the thread's outermost call (no
  // return address) it lets run.
  struct tally {
    std::atomic<uint64_t> returned{0}, resumed{0};
    std::atomic<int> nice{0};  // of the handler's thread
  };
  auto counts = std::make_shared<tally>();
  auto reg = std::make_shared<handler_registry>();
  reg->add("early", [counts](const handler_hit& hit) {
    counts->nice = getpriority(PRIO_PROCESS, id_t(gettid()));
    auto ret = hit.value("ret");
    if (!ret || *ret == 0) {
      ++counts->resumed;
      return handler_decision::resume();
    }
    ++counts->returned;
    return handler_decision::return_from_call(hit, *ret, early_rax);
  });
  s.handlers = reg;

  auto fns = dom->code().functions();
  auto target = fns[3];
  auto plan = std::make_shared<domain_plan>();
  plan->mode = GetParam();
  plan->breakpoints.push_back(
    {{"early", "main", {}, return_address_capture(), handler_binding{"early", no_timeout}, {}, {}},
     breakpoint_target::physical(target.entry_pa)});
  plan->breakpoints.push_back(
    {{"fn0", "main", {}, {}, {}, {}, {}}, breakpoint_target::physical(fns[0].entry_pa)});
  engine_config::domain_entry e;
  e.select.name = dc.name;
  e.plan = plan;
  s.cfg.domains.push_back(e);

  auto reports = s.run();
  ASSERT_TRUE(s.verified(reports));  // hits = reached, every request answered, nothing left

  auto hits = find_bp(reports.at(0), "early").hits;
  EXPECT_EQ(hits, counts->returned + counts->resumed);
  EXPECT_GT(counts->returned.load(), 10u);
  // The guest took the other path: the entry retired only where the handler resumed, and
  // every call it returned from came back with its rax.
  auto view = find_bp(reports.at(0), "early").view;
  EXPECT_EQ(dom->executions(target.entry_pa, view), counts->resumed.load());
  uint64_t returned_calls = 0;
  for (uint32_t v = 0; v < dc.vcpus; ++v)
    for (auto& c : dom->calls(v, target.entry_pa))
      if (c.returned_early) {
        ++returned_calls;
        EXPECT_EQ(c.returned_rax, early_rax);
      }
  EXPECT_EQ(returned_calls, counts->returned.load());
  EXPECT_GE(counts->nice.load(), 10) << "a function handler's thread yields to the pollers";
  std::printf("%llu hits: %llu calls returned early, %llu resumed\n", (unsigned long long)hits,
              (unsigned long long)counts->returned.load(),
              (unsigned long long)counts->resumed.load());
}

INSTANTIATE_TEST_SUITE_P(every, handlers_e2e,
                         ::testing::Values(step_mode::fast, step_mode::classic, step_mode::emulate),
                         [](const auto& info) { return std::string(to_string(info.param)); });

TEST(handlers, a_handler_that_never_answers_holds_only_its_vcpu_and_only_until_the_deadline) {
  scenario s;
  auto held_dom = s.add("held", 2, 0);  // no budget: the phases below decide when to stop
  auto other_dom = s.add("other", 2, 0);

  // The handler keeps every promise (in its own state, as an actor that answers later
  // does) and never delivers one.
  struct hold_state {
    std::atomic<uint64_t> received{0};
    std::atomic<uint32_t> vcpu{0};
  };
  struct holder {
    std::vector<caf::typed_response_promise<handler_decision>> promises;
  };
  auto hold = std::make_shared<hold_state>();
  auto reg = std::make_shared<handler_registry>();
  reg->add_actor("hold", [hold](caf::actor_system& sys) {
    // The int: CAF 0.17 and argument-less function actors (see actor_fixture's spawn_client).
    return sys.spawn(
      [hold](hit_handler_actor::stateful_pointer<holder> self,
             int) -> hit_handler_actor::behavior_type {
        return {[self, hold](hit_atom, const handler_hit& hit) -> caf::result<handler_decision> {
          auto promise = self->make_response_promise<handler_decision>();
          self->state.promises.push_back(promise);
          hold->vcpu = hit.vcpu;
          ++hold->received;
          return promise;
        }};
      },
      0);
  });
  s.handlers = reg;

  // Only VCPU 0 of "held" lives in the view with the handler's breakpoint.
  auto deadline = std::chrono::milliseconds(1500);
  auto plan = std::make_shared<domain_plan>(*s.cfg.domains[0].plan);
  plan->views = {"main", "handled"};
  plan->vcpu_views[0] = "handled";
  plan->breakpoints.push_back(
    {{"held", "handled", {}, {}, handler_binding{"hold", deadline}, {}, {}},
     breakpoint_target::physical(held_dom->code().functions()[0].entry_pa)});
  s.cfg.domains[0].plan = plan;

  engine eng{s.cfg, s.make_driver(), 0, s.handlers};
  ASSERT_FALSE(eng.start());
  ASSERT_TRUE(eventually([&] { return hold->received.load() >= 1; }));
  auto t_hit = std::chrono::steady_clock::now();
  ASSERT_EQ(hold->vcpu.load(), 0u);
  // While VCPU 0 waits, its sibling and the other domain run on.
  auto held_before = held_dom->vcpu_retired(0);
  auto sibling = held_dom->vcpu_retired(1);
  auto others = other_dom->instructions_retired();
  ASSERT_TRUE(eventually([&] {
    return held_dom->vcpu_retired(1) > sibling + 50'000 &&
           other_dom->instructions_retired() > others + 50'000;
  }));
  // Read the VCPU first: if the deadline had not passed after, the VCPU had not moved before.
  auto held_now = held_dom->vcpu_retired(0);
  bool before_deadline = metric(eng, "vmitap_handler_timeouts_total", "held") == 0;
  if (before_deadline) {
    EXPECT_EQ(held_now, held_before) << "VCPU 0 ran before its handler's deadline";
  }
  // At the deadline the VCPU resumes unchanged.
  ASSERT_TRUE(
    eventually([&] { return metric(eng, "vmitap_handler_timeouts_total", "held") >= 1; }));
  ASSERT_TRUE(eventually([&] { return held_dom->vcpu_retired(0) > held_before; }));
  auto waited = std::chrono::steady_clock::now() - t_hit;
  EXPECT_EQ(metric(eng, "vmitap_handler_timeouts_total", "other"), 0);
  // Taken before the stop, which may answer one more hit while its handler still has it.
  auto timeouts = metric(eng, "vmitap_handler_timeouts_total", "held");
  auto reports = eng.stop();
  ASSERT_TRUE(s.verified(reports));
  uint64_t hits = 0;
  for (auto& r : reports)
    if (r.name == "held")
      hits = find_bp(r, "held").hits;
  EXPECT_GE(timeouts, 1);
  EXPECT_LE(timeouts, double(hits));
  std::printf(
    "VCPU 0 held %.0f ms (deadline %lld ms, checked before it: %s); %llu hits, %.0f "
    "timeouts\n",
    std::chrono::duration<double, std::milli>(waited).count(), (long long)deadline.count(),
    before_deadline ? "yes" : "no", (unsigned long long)hits, timeouts);
}

TEST(handlers, a_handler_that_throws_or_dies_leaves_no_vcpu_paused_and_is_counted) {
  scenario s;
  auto dom = s.add("guest", 2, 100'000);
  auto reg = std::make_shared<handler_registry>();
  auto thrown = std::make_shared<std::atomic<uint64_t>>(0);
  reg->add("throws", [thrown](const handler_hit&) -> handler_decision {
    ++*thrown;
    throw std::runtime_error("handler bug");
  });
  // An actor that exits with an error at each hit: the relay sees it go down.
  auto deaths = std::make_shared<std::atomic<uint64_t>>(0);
  reg->add_actor("dies", [deaths](caf::actor_system& sys) {
    return sys.spawn(
      [deaths](hit_handler_actor::pointer self, int) -> hit_handler_actor::behavior_type {
        return {[self, deaths](hit_atom, const handler_hit&) -> caf::result<handler_decision> {
          ++*deaths;
          auto never = self->make_response_promise<handler_decision>();
          self->quit(make_error(ec::handler_failed, "gave up"));
          return never;
        }};
      },
      0);
  });
  s.handlers = reg;
  auto fns = dom->code().functions();
  auto plan = std::make_shared<domain_plan>(*s.cfg.domains[0].plan);
  // At the hot plan's fn1_entry and fn2_entry: each hit records there too.
  plan->breakpoints.push_back(
    {{"throws", "main", {}, {}, handler_binding{"throws", no_timeout}, {}, {}},
     breakpoint_target::physical(fns[1].entry_pa)});
  plan->breakpoints.push_back(
    {{"dies", "main", {}, {}, handler_binding{"dies", no_timeout}, {}, {}},
     breakpoint_target::physical(fns[2].entry_pa)});
  s.cfg.domains[0].plan = plan;

  engine eng{s.cfg, s.make_driver(), 0, s.handlers};
  ASSERT_FALSE(eng.start());
  ASSERT_TRUE(eventually([&] { return s.all_halted(); }));
  // Every VCPU halted, so every hit was answered: the counts are final.
  auto errors = metric(eng, "vmitap_handler_errors_total", "guest");
  auto reports = eng.stop();
  ASSERT_TRUE(s.verified(reports));
  auto& r = reports.at(0);
  auto throws_hits = find_bp(r, "throws").hits;
  auto dies_hits = find_bp(r, "dies").hits;
  EXPECT_EQ(find_bp(r, "fn1_entry").hits, throws_hits);
  EXPECT_EQ(find_bp(r, "fn2_entry").hits, dies_hits);
  EXPECT_GT(throws_hits, 10u);
  EXPECT_GT(dies_hits, 10u);
  EXPECT_EQ(errors, double(throws_hits + dies_hits));
  EXPECT_EQ(thrown->load(), throws_hits) << "a function that throws stays registered";
  // A hit queued behind the one that stopped an instance is bounced without reaching it.
  EXPECT_LE(deaths->load(), dies_hits);
  EXPECT_GT(deaths->load(), 0u);
}

}  // namespace

namespace {

/// One breakpoint named `name` at the entry of `dom`'s function 0 with handler `handler`.
void add_handled(scenario& s, const std::shared_ptr<sim::domain>& dom, const std::string& handler,
                 std::chrono::microseconds deadline) {
  auto plan = std::make_shared<domain_plan>(*s.cfg.domains[0].plan);
  plan->breakpoints.push_back(
    {{"handled", "main", {}, {}, handler_binding{handler, deadline}, {}, {}},
     breakpoint_target::physical(dom->code().functions()[0].entry_pa)});
  s.cfg.domains[0].plan = plan;
}

}  // namespace

// Regression (issue 21): a 50 ms handler with a 100 µs deadline was called for every hit long
// after its VCPU had resumed: calls piled up in its mailbox (RSS growing ~1 MB/s) and ran on
// through the stop.
TEST(handlers, calls_past_their_deadline_are_skipped_and_none_runs_after_the_stop) {
  scenario s;
  auto dom = s.add("slow", 2, 0);
  using clock = std::chrono::steady_clock;
  struct tally {
    std::mutex m;
    std::vector<clock::time_point> started;
  };
  auto t = std::make_shared<tally>();
  auto reg = std::make_shared<handler_registry>();
  reg->add("slow", [t](const handler_hit&) {
    {
      std::lock_guard g{t->m};
      t->started.push_back(clock::now());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    return handler_decision::resume();
  });
  s.handlers = reg;
  add_handled(s, dom, "slow", std::chrono::microseconds(100));
  engine eng{s.cfg, s.make_driver(), 0, s.handlers};
  ASSERT_FALSE(eng.start());
  ASSERT_TRUE(eventually([&] {
    return metric_value(eng.collect(), "vmitap_handler_dropped_total",
                        {{"domain", "slow"}, {"cause", "expired"}})
             .value_or(0) >= 100;
  }))
    << "calls queued past their deadline are skipped";
  auto reports = eng.stop();
  auto stopped = clock::now();
  ASSERT_TRUE(eventually([&] { return eng.handler_calls_running() == 0; }));
  ASSERT_TRUE(s.verified(reports));
  auto dropped = [&](const char* cause) {
    return uint64_t(metric_value(eng.collect(), "vmitap_handler_dropped_total",
                                 {{"domain", "slow"}, {"cause", cause}})
                      .value_or(0));
  };
  std::lock_guard g{t->m};
  auto hits = find_bp(reports.at(0), "handled").hits;
  // Each hit's call ran, was skipped as expired, was not sent, or was still queued at the stop.
  EXPECT_LE(t->started.size() + dropped("expired") + dropped("queue_full"), hits);
  for (auto& at : t->started)
    EXPECT_LT(at, stopped) << "a call ran after the stop, for a VCPU resumed long before";
}

TEST(handlers, a_handler_that_falls_behind_has_a_bounded_queue_and_the_rest_is_counted) {
  scenario s;
  auto dom = s.add("behind", 2, 0);
  // An actor handler that keeps every promise and never answers: each call stays queued.
  struct holder {
    std::vector<caf::typed_response_promise<handler_decision>> promises;
  };
  auto received = std::make_shared<std::atomic<uint64_t>>(0);
  auto reg = std::make_shared<handler_registry>();
  reg->add_actor("hold", [received](caf::actor_system& sys) {
    return sys.spawn(
      [received](hit_handler_actor::stateful_pointer<holder> self,
                 int) -> hit_handler_actor::behavior_type {
        return {[self, received](hit_atom, const handler_hit&) -> caf::result<handler_decision> {
          ++*received;
          self->state.promises.push_back(self->make_response_promise<handler_decision>());
          return self->state.promises.back();
        }};
      },
      0);
  });
  s.handlers = reg;
  add_handled(s, dom, "hold", std::chrono::microseconds(200));
  engine eng{s.cfg, s.make_driver(), 0, s.handlers};
  ASSERT_FALSE(eng.start());
  auto full = [&] {
    return metric_value(eng.collect(), "vmitap_handler_dropped_total",
                        {{"domain", "behind"}, {"cause", "queue_full"}})
      .value_or(0);
  };
  ASSERT_TRUE(eventually([&] { return full() >= 100; }));
  ASSERT_TRUE(eventually([&] { return received->load() >= defaults::handler_queue_bound; }));
  EXPECT_EQ(received->load(), defaults::handler_queue_bound) << "never more calls queued";
  auto reports = eng.stop();
  ASSERT_TRUE(s.verified(reports));
}

// Regression (issue 21): a function handler that blocks turned a clean stop into exit 1
// ("1 actor(s) still busy ... a driver call that does not return"): the stop waited for it.
TEST(handlers, a_blocking_function_handler_neither_delays_nor_fails_the_stop) {
  scenario s;
  auto dom = s.add("blocked", 2, 0);
  s.cfg.stop_deadline = std::chrono::seconds(3);
  auto release = std::make_shared<std::atomic<bool>>(false);
  auto entered = std::make_shared<std::atomic<uint64_t>>(0);
  auto reg = std::make_shared<handler_registry>();
  reg->add("block", [release, entered](const handler_hit&) {
    ++*entered;
    while (!release->load())
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return handler_decision::resume();
  });
  s.handlers = reg;
  // Long enough for the handler's new thread to take its first call in time on a loaded
  // machine: a call that waited past its deadline is skipped.
  add_handled(s, dom, "block", std::chrono::milliseconds(20));
  {
    engine eng{s.cfg, s.make_driver(), 0, s.handlers};
    ASSERT_FALSE(eng.start());
    ASSERT_TRUE(eventually([&] { return entered->load() >= 1; }));
    ASSERT_TRUE(
      eventually([&] { return metric(eng, "vmitap_handler_timeouts_total", "blocked") >= 20; }))
      << "the other hits resume at their deadline";
    auto reports = eng.stop();
    EXPECT_FALSE(eng.abandoned()) << "nothing blamed on a driver call";
    EXPECT_EQ(eng.handler_calls_running(), 1u);
    ASSERT_EQ(reports.size(), 1u);
    EXPECT_TRUE(reports[0].error.empty()) << reports[0].error;
    EXPECT_TRUE(s.verified(reports));
    release->store(true);
    ASSERT_TRUE(eventually([&] { return eng.handler_calls_running() == 0; }));
  }
}

// Regression (issue 21): "once per streak" wrote thousands of lines for a handler failing
// every third call (each success ended the streak). Each cause is now logged at most once
// per log interval.
TEST(handlers, a_handler_that_fails_now_and_then_is_logged_once_per_interval) {
  scenario s;
  auto dom = s.add("flaky", 2, 0);
  auto calls = std::make_shared<std::atomic<uint64_t>>(0);
  auto reg = std::make_shared<handler_registry>();
  reg->add("flaky", [calls](const handler_hit&) -> handler_decision {
    if (++*calls % 3 == 0)
      throw std::runtime_error("every third call");
    return handler_decision::resume();
  });
  s.handlers = reg;
  add_handled(s, dom, "flaky", no_timeout);
  auto out = std::make_shared<std::ostringstream>();
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(*out);
  spdlog::default_logger()->sinks().push_back(sink);
  auto t0 = std::chrono::steady_clock::now();
  engine eng{s.cfg, s.make_driver(), 0, s.handlers};
  ASSERT_FALSE(eng.start());
  ASSERT_TRUE(
    eventually([&] { return metric(eng, "vmitap_handler_errors_total", "flaky") >= 100; }));
  auto reports = eng.stop();
  auto intervals = (std::chrono::steady_clock::now() - t0) / defaults::log_interval;
  std::erase(spdlog::default_logger()->sinks(), sink);
  EXPECT_TRUE(s.verified(reports));
  auto log = out->str();
  size_t lines = 0;
  for (size_t at = 0; (at = log.find("every third call", at)) != std::string::npos; ++at)
    ++lines;
  EXPECT_GE(lines, 1u);
  EXPECT_LE(lines, size_t(1 + intervals)) << "one line per log interval begun";
}
