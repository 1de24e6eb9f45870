// The domain supervisor on CAF's deterministic scheduler, a manual sim and a poller the test
// runs by hand: the ordered teardown's steps, in order, and the domain left as it was.

#include "actors/control/domain_supervisor.hpp"
#include "tests/support/actor_fixture.hpp"

using namespace vmitap;
using namespace vmitap::testing;

namespace {

class supervisor_test : public actor_fixture {
protected:
  poller_pool pollers{1, {std::chrono::nanoseconds(0), false}};
  std::shared_ptr<domain_directory> directory = std::make_shared<domain_directory>();
  teardown_watch_ptr watch = std::make_shared<teardown_watch>();

  /// One round each: actors (time stands still), guest, poller.
  void round() {
    run();
    hv->run_pending();
    pollers.at(0).run_once(false);
  }

  /// Rounds until `done` holds; false if it does not within `max` rounds.
  template <class Done>
  bool drive(Done done, int max = 100000) {
    for (int i = 0; i < max && !done(); ++i)
      round();
    return done();
  }

  /// Sends `xs` to `sup` and drives until the answer is in `out`.
  template <class T, class... Ts>
  void request(const domain_supervisor_actor& sup, std::optional<caf::expected<T>>& out, Ts... xs) {
    spawn_client([&, sup](caf::event_based_actor* self) {
      self->request(caf::actor_cast<caf::actor>(sup), std::chrono::seconds(10), xs...)
        .then([&](T& x) { out = std::move(x); }, [&](caf::error& e) { out = e; });
    });
    ASSERT_TRUE(drive([&] { return out.has_value(); })) << "no answer";
  }
};

}  // namespace

TEST_F(supervisor_test, the_teardown_runs_its_steps_in_order_and_leaves_the_domain_as_it_was) {
  auto made = hv->create_domain(small_domain(2));
  ASSERT_TRUE(made);
  dom = *made;
  auto plan = std::make_shared<domain_plan>();
  plan->breakpoints.push_back(breakpoint_def::at("fn0", dom->code().functions()[0].entry_pa));
  supervisor_config cfg;
  cfg.driver = std::shared_ptr<drv::driver>(&driver, [](drv::driver*) {});  // the fixture's
  cfg.info = dom->info();
  cfg.plan = plan;
  cfg.pollers = &pollers;
  cfg.directory = directory;
  cfg.session = 1;
  cfg.watch = watch;
  auto sup = sys.spawn(domain_supervisor, cfg);

  std::optional<caf::expected<ok_atom>> attached;
  request(sup, attached, attach_atom_v);
  ASSERT_TRUE(*attached) << render(attached->error());
  EXPECT_TRUE(watch->steps().empty()) << "no teardown step before the detach";
  for (int i = 0; i < 200; ++i)
    round();  // the guest runs and hits
  std::optional<caf::expected<domain_report>> report;
  request(sup, report, detach_atom_v);
  ASSERT_TRUE(*report) << render(report->error());
  EXPECT_EQ(watch->steps(), (std::vector<std::string>{"pausing the domain", "draining the ring",
                                                      "listing breakpoints", "removing breakpoints",
                                                      "restoring pages and destroying views",
                                                      "detaching", "done"}));
  EXPECT_TRUE((*report)->error.empty()) << (*report)->error;
  ASSERT_EQ((*report)->breakpoints.size(), 1u);
  EXPECT_GT((*report)->breakpoints[0].hits, 0u) << "the guest ran through the breakpoint";
  EXPECT_EQ((*report)->breakpoints[0].hits,
            dom->reached((*report)->breakpoints[0].pa, (*report)->breakpoints[0].view));
  auto inv = dom->check();
  EXPECT_TRUE(inv.holds());
  EXPECT_EQ(inv.paused_vcpus, 0u);
  EXPECT_EQ(inv.pages_changed, 0u);
  EXPECT_EQ(inv.views_left, 0u);
  EXPECT_EQ(inv.unanswered, 0u);
}
