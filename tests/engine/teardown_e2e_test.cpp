// End to end, off the happy path of a stop: access changes that fail at attach or at the
// restore, a detach stuck in a driver call (the teardown watchdog's report) and one that
// never returns. Each checks what the guest is left with.

#include "drivers/defaults.hpp"
#include "tests/support/scenario.hpp"

#include <cerrno>
#include <cstdio>
#include <cstdlib>

using namespace vmitap;
using namespace vmitap::testing;
using namespace std::chrono_literals;

TEST(engine_e2e, failing_access_change_at_attach_is_reported_and_guest_left_unchanged) {
  scenario s;
  auto dom = s.add("f", 1, 0);
  dom->fail_access_changes(1, 0, EIO);
  auto reports = s.run_until([](engine& eng) { return eng.counters().attach_failed.get() > 0; });
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_NE(reports[0].error.find("errno 5"), std::string::npos) << reports[0].error;
  EXPECT_TRUE(reports[0].breakpoints.empty()) << "no breakpoint is armed";
  EXPECT_TRUE(dom->check().holds());
}

// Regression (issue 13, campaign seed 1043): one failing access change while the stop
// restored a page left it changed. The restore writes again what a failing call left; only a
// fault that outlasts every attempt leaves pages changed, and the report says how many.
TEST(engine_e2e, a_restore_that_fails_for_a_moment_at_stop_is_retried_and_no_page_stays_changed) {
  for (uint32_t failing : {1u, 3u, 50u}) {
    scenario s;
    auto dom = s.add("r", 2, 0);
    // Once attached, the next `failing` access changes fail: the stop's restores.
    auto reports = s.run_until([&](engine& eng) {
      if (eng.counters().domains_monitored.load() == 0)
        return false;
      dom->fail_access_changes(failing, 0, ENOMEM);
      return true;
    });
    ASSERT_EQ(reports.size(), 1u);
    auto inv = dom->check();
    if (failing < uint32_t(defaults::restore_attempts)) {
      EXPECT_TRUE(reports[0].error.empty()) << failing << ": " << reports[0].error;
      EXPECT_TRUE(inv.holds()) << failing << " failing calls: " << inv.pages_changed << " pages";
    } else {
      EXPECT_NE(reports[0].error.find("pages left changed"), std::string::npos) << reports[0].error;
      EXPECT_NE(reports[0].error.find("errno 12"), std::string::npos) << reports[0].error;
      EXPECT_GT(inv.pages_changed, 0u) << "the sim sees what the report says";
    }
    EXPECT_EQ(inv.paused_vcpus, 0u);
  }
}

// The teardown watchdog (issue 13): a detach that outlives the stop deadline is reported
// with what is still outstanding — the step, the driver call it waits in, the paused
// domain, the pages still changed — and the teardown goes on, so the guest ends restored.
TEST(engine_e2e, a_detach_stuck_in_a_driver_call_is_reported_with_what_is_outstanding) {
  scenario s;
  s.cfg.stop_deadline = 500ms;  // the teardown's actors get 500 ms more: the stall ends in them
  auto dom = s.add("stuck", 2, 0);
  auto t0 = std::chrono::steady_clock::now();
  auto reports = s.run_until([&](engine& eng) {
    if (eng.counters().domains_monitored.load() == 0)
      return false;
    dom->stall_access_changes(1, 750ms);  // the stop's first restore hangs
    t0 = std::chrono::steady_clock::now();
    return true;
  });
  ASSERT_EQ(reports.size(), 1u);
  auto& error = reports[0].error;
  EXPECT_NE(error.find("detach exceeded its deadline of 500 ms"), std::string::npos) << error;
  EXPECT_NE(error.find("in driver call set_access for"), std::string::npos) << error;
  EXPECT_NE(error.find("every VCPU is paused by vmitap"), std::string::npos) << error;
  char page[64];
  std::snprintf(page, sizeof page, "pages still changed: view 1: %#llx",
                (unsigned long long)drv::gfn_of(dom->code().functions()[0].entry_pa));
  EXPECT_NE(error.find(page), std::string::npos) << error;
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 750ms) << "the stop waited for the teardown";
  auto inv = dom->check();
  EXPECT_TRUE(inv.holds()) << "the teardown went on: pages changed " << inv.pages_changed
                           << ", paused " << inv.paused_vcpus << ", views " << inv.views_left;
}

/// A domain whose teardown hangs in set_access; exits 0 if the stop returned in time, said
/// that it left actors behind, and reported the domain (its report on stderr).
[[noreturn]] void stop_with_a_teardown_that_never_ends() {
  scenario s;
  s.cfg.stop_deadline = 200ms;
  auto dom = s.add("hung", 1, 0);
  auto* eng = new engine{s.cfg, s.make_driver()};  // never destroyed: its threads are stuck
  bool ok =
    !eng->start() && eventually([&] { return eng->counters().domains_monitored.load() > 0; });
  dom->stall_access_changes(1, std::chrono::hours(1));
  auto t0 = std::chrono::steady_clock::now();
  auto reports = eng->stop();
  ok = ok && std::chrono::steady_clock::now() - t0 < 5s && eng->abandoned() && reports.size() == 1;
  std::fprintf(stderr, "report: %s\n", reports.empty() ? "none" : reports[0].error.c_str());
  std::fflush(nullptr);
  std::_Exit(ok ? 0 : 1);
}

// A driver call that does not return must not keep the process: after a second stop
// deadline the stop leaves the stuck actors behind and says so, and the process exits
// without destroying the engine, as vmitap's run loop does. Run in a child process of its
// own (a death test), since the stuck threads live until it exits.
TEST(engine_e2e_DeathTest, a_teardown_that_never_ends_is_left_behind_and_the_stop_returns) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(stop_with_a_teardown_that_never_ends(), ::testing::ExitedWithCode(0),
              "report: detach exceeded its deadline of 200 ms, .*in driver call set_access");
}
