#pragma once

// End-to-end scenarios: the whole engine, with real threads, on the threaded simulated
// hypervisor (through its own driver or a fake Xen), checked against its ground truth.

#include "drivers/error.hpp"
#include "drivers/sim/sim_driver.hpp"
#include "engine/backend_sim.hpp"
#include "engine/engine.hpp"
#include "tests/support/temp_files.hpp"

#include <gtest/gtest.h>

#include <thread>

namespace vmitap::testing {

/// A plan with breakpoints on hot function entries, one inside a function and two sharing a
/// page; with `two_views`, VCPU 1 lives in a second view with a breakpoint at the same address.
inline plan_ptr hot_plan(const sim::program& code, step_mode mode, bool two_views) {
  auto plan = std::make_shared<domain_plan>();
  plan->mode = mode;
  if (two_views) {
    plan->views = {"main", "shadow"};
    plan->vcpu_views[1] = "shadow";
  }
  auto fn = code.functions();
  auto add = [&](std::string name, uint64_t pa, std::string view) {
    plan->breakpoints.push_back({{std::move(name), std::move(view), {"test"}, {}, {}, {}, {}},
                                 breakpoint_target::physical(pa)});
  };
  add("fn0_entry", fn[0].entry_pa, "main");
  add("fn1_entry", fn[1].entry_pa, "main");
  add("fn2_entry", fn[2].entry_pa, "main");
  add("fn0_body", code.at(fn[0].first + fn[0].count / 2).pa, "main");
  add("fn5_entry", fn[5].entry_pa, "main");
  if (two_views)
    add("fn0_entry_shadow", fn[0].entry_pa, "shadow");
  return plan;
}

/// How long a test waits for what must happen before it says it did not: generous, since a
/// sanitizer build on a loaded machine runs many times slower, and below ctest's timeout.
inline constexpr std::chrono::milliseconds patience = std::chrono::minutes(4);

/// Waits until `cond()` holds, checking every 5 ms, for at most `limit`. True if it does.
/// Tests wait for what must happen, never a fixed time.
template <class Cond>
bool eventually(Cond&& cond, std::chrono::milliseconds limit = patience) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!cond()) {
    if (std::chrono::steady_clock::now() >= deadline)
      return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

struct scenario {
  std::shared_ptr<sim::hypervisor> hv;
  engine_config cfg;
  std::vector<std::shared_ptr<sim::domain>> domains;
  handler_registry_ptr handlers;  ///< what breakpoints' handlers name
  /// The driver the engine runs on: the sim's own, or the Xen driver on a fake Xen.
  std::function<std::shared_ptr<drv::driver>()> make_driver = [this] {
    return std::make_shared<sim::sim_driver>(hv);
  };

  explicit scenario(sim::hypervisor_config hc = {}) : hv(std::make_shared<sim::hypervisor>(hc)) {
    cfg.metrics_listen = "";  // tests run in parallel: no fixed port
    cfg.pollers = 1;
  }

  std::shared_ptr<sim::domain> add(std::string name, uint32_t vcpus, uint64_t budget,
                                   step_mode mode = step_mode::fast, bool two_views = false,
                                   uint64_t seed = 0) {
    sim::domain_config dc;
    dc.name = std::move(name);
    dc.vcpus = vcpus;
    dc.instructions_per_vcpu = budget;
    dc.workload.seed = seed ? seed : 1000 + domains.size();
    auto dom = *hv->create_domain(dc);
    engine_config::domain_entry e;
    e.select.name = dc.name;
    e.plan = hot_plan(dom->code(), mode, two_views);
    cfg.domains.push_back(std::move(e));
    domains.push_back(dom);
    return dom;
  }

  /// A JSONL sink named "hits" writing into a fresh directory `dir`; returns the file's path.
  /// Domains name it in their `sinks` to send it their records.
  std::string add_jsonl_sink(const std::string& dir) {
    sink_config sink;
    sink.name = "hits";
    sink.type = sink_config::kind::jsonl_file;
    sink.path = fresh_temp_dir(dir) + "/hits.jsonl";
    cfg.sinks.push_back(sink);
    return sink.path;
  }

  /// True once every domain has raised more than `n` requests.
  bool each_raised_more_than(uint64_t n) {
    for (auto& d : domains)
      if (d->check().requests_raised <= n)
        return false;
    return true;
  }

  /// Runs the engine while `dom` raises one malformed request of each kind (bad version on
  /// VCPU 0, unknown reason on VCPU 1, one naming a VCPU it lacks), until all three are counted.
  std::vector<domain_report> run_with_malformed_requests(const std::shared_ptr<sim::domain>& dom) {
    return run_until([](engine& eng) { return malformed_counted(eng) >= 3; },
                     [&] {
                       dom->inject_malformed(0, sim::malformed_kind::bad_version);
                       dom->inject_malformed(1, sim::malformed_kind::unknown_reason);
                       dom->inject_malformed(0, sim::malformed_kind::vcpu_out_of_range);
                     });
  }

  /// Malformed requests the engine has counted so far, over every session.
  static uint64_t malformed_counted(engine& eng) {
    uint64_t n = 0;
    for (auto& r : eng.status())
      n += r.totals.malformed;
    return n;
  }

  bool all_halted() {
    for (auto& d : domains)
      if (d->state() == drv::domain_state::running && !d->halted())
        return false;
    return true;
  }

  /// Runs the engine until every VCPU used its budget (or `limit`), then stops it.
  std::vector<domain_report> run(std::function<void()> midway = {},
                                 std::chrono::milliseconds limit = patience) {
    return run_until([this](engine&) { return all_halted(); }, std::move(midway), limit);
  }

  /// Runs the engine until `done(engine)` holds (or `limit`), then stops it.
  std::vector<domain_report> run_until(std::function<bool(engine&)> done,
                                       std::function<void()> midway = {},
                                       std::chrono::milliseconds limit = patience) {
    engine eng{cfg, make_driver(), 0, handlers};
    auto err = eng.start();
    EXPECT_FALSE(err) << render(err);
    auto t0 = std::chrono::steady_clock::now();
    bool called = false;
    bool finished = false;
    while (!(finished = done(eng)) && std::chrono::steady_clock::now() - t0 < limit) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      if (midway && !called &&
          std::chrono::steady_clock::now() - t0 > std::chrono::milliseconds(50)) {
        midway();
        called = true;
      }
    }
    // A run that ends at the limit is a failure of its own, not a count that differs later.
    EXPECT_TRUE(finished) << "not done within " << limit.count() << " ms";
    return eng.stop();
  }

  /// Every breakpoint's hits equal ground truth; requests answered = raised; nothing left
  /// paused or changed. Prints the table when it does not hold.
  bool verified(const std::vector<domain_report>& reports, engine_config selection = {}) {
    auto truth = sim_truth(hv, selection.domains.empty() ? cfg : selection);
    auto* devnull = std::fopen("/dev/null", "w");
    bool ok = truth->verify(reports, devnull);
    std::fclose(devnull);
    if (!ok)
      truth->verify(reports, stdout);
    return ok;
  }
};

inline const breakpoint_count& find_bp(const domain_report& r, const std::string& name) {
  for (auto& bp : r.breakpoints)
    if (bp.name == name)
      return bp;
  throw std::runtime_error("no breakpoint " + name);
}

}  // namespace vmitap::testing
