// A trial on the engine in this process: a random topology on the threaded sim, through the
// sim's driver or the Xen driver on a fake Xen; reloads and the stop at random moments (from
// the very start of attach on) on one thread, faults on another, racing them; sometimes slow
// or blocking handlers, records at the size limits into a small sink, few kept reports.
// Afterwards every domain the sim ever ran is checked.

#include "drivers/guest/profile.hpp"
#include "drivers/sim/kernel.hpp"
#include "tests/campaign/campaign.hpp"
#include "tests/support/metric_values.hpp"
#include "tests/support/xen_scenario.hpp"

#include <cerrno>
#include <map>
#include <mutex>
#include <set>

namespace vmitap::testing::campaign {
namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

/// The domains of the trial, by slot: a restart puts the new domain in its predecessor's slot.
class domain_slots {
public:
  explicit domain_slots(std::vector<std::shared_ptr<sim::domain>> initial) :
    slots_(std::move(initial)) {}
  std::shared_ptr<sim::domain> at(size_t i) {
    std::lock_guard g{mutex_};
    return slots_.at(i);
  }
  void replace(size_t i, std::shared_ptr<sim::domain> d) {
    std::lock_guard g{mutex_};
    slots_.at(i) = std::move(d);
  }
  size_t size() const { return slots_.size(); }

private:
  std::mutex mutex_;
  std::vector<std::shared_ptr<sim::domain>> slots_;
};

/// A reload's config: entries dropped or restored, step modes changed (a re-attach),
/// breakpoints removed and added (some with a rate limit).
engine_config next_config(const engine_config& base, const std::vector<const sim::program*>& code,
                          dice& d) {
  engine_config next = base;
  next.domains.clear();
  for (size_t i = 0; i < base.domains.size(); ++i) {
    if (d.one_in(5))
      continue;  // not monitored any more: detached
    auto entry = base.domains[i];
    auto plan = std::make_shared<domain_plan>(*entry.plan);
    if (d.one_in(4))
      plan->mode = step_mode(d.below(3));
    std::vector<breakpoint_def> kept;
    for (auto& bp : plan->breakpoints)
      if (!d.one_in(3))
        kept.push_back(bp);
    auto fns = code[i]->functions();
    for (uint64_t k = d.below(4); k > 0; --k) {
      auto fn = d.below(fns.size());
      rate_limit limit;
      if (d.one_in(3))
        limit = {uint32_t(50 + d.below(500)), std::chrono::milliseconds(10 + d.below(100))};
      kept.push_back(
        {{"fn" + std::to_string(fn) + "_added", plan->views[0], {"campaign"}, {}, {}, limit, {}},
         breakpoint_target::physical(fns[fn].entry_pa)});
    }
    // One breakpoint per name: an added one may repeat a kept one's name.
    std::set<std::string> names;
    plan->breakpoints.clear();
    for (auto& bp : kept)
      if (names.insert(bp.name()).second)
        plan->breakpoints.push_back(std::move(bp));
    entry.plan = plan;
    next.domains.push_back(std::move(entry));
  }
  return next;
}

enum class fault { kill, restart, fail_changes, fail_reads, malformed, delay, notify_streak };
constexpr uint64_t fault_kinds = 7;

/// Injects one fault into slot `i`; true if it can make that domain's teardown report an
/// error (a driver call that failed). `xen`: the fake Xen the engine runs on, if it does.
bool inject(fault f, domain_slots& slots, size_t i, sim::hypervisor& hv, fake_xen* xen, dice& d) {
  auto dom = slots.at(i);
  switch (f) {
    case fault::notify_streak:
      // Shorter than the teardown's patience (12 tries): answers reach Xen in the end.
      if (xen)
        xen->fail_next("xenevtchn_notify", EIO, int(1 + d.below(10)));
      return false;
    case fault::kill:
      dom->kill();
      return false;
    case fault::restart:
      if (auto fresh = hv.restart_domain(dom->id()))
        slots.replace(i, fresh);
      return false;
    case fault::fail_changes:
      dom->fail_access_changes(uint32_t(1 + d.below(2)), d.below(3), d.one_in(2) ? EIO : ENOMEM);
      return true;
    case fault::fail_reads:
      dom->fail_access_reads(uint32_t(d.below(3)), 1, EIO);
      return true;
    case fault::malformed:
      dom->inject_malformed(drv::vcpu_id(d.below(dom->config().vcpus)),
                            sim::malformed_kind(d.below(3)));
      return false;
    case fault::delay:
      dom->delay_responses(uint32_t(1 + d.below(20)), std::chrono::microseconds(d.below(20000)));
      return false;
  }
  return false;
}

void sleep_until(clock_type::time_point t0, uint64_t ms) {
  std::this_thread::sleep_until(t0 + std::chrono::milliseconds(ms));
}

/// Handlers a trial may give a breakpoint: one that takes a few milliseconds, and one that
/// blocks until the trial lets it go (after the stop).
struct trial_handlers {
  std::shared_ptr<handler_registry> registry = std::make_shared<handler_registry>();
  std::shared_ptr<std::atomic<bool>> release = std::make_shared<std::atomic<bool>>(false);

  explicit trial_handlers(std::chrono::microseconds slow) {
    registry->add("slow", [slow](const handler_hit&) {
      std::this_thread::sleep_for(slow);
      return handler_decision::resume();
    });
    registry->add("block", [release = release](const handler_hit&) {
      while (!release->load())
        std::this_thread::sleep_for(1ms);
      return handler_decision::resume();
    });
  }
};

/// 32 captures of 512 bytes at rsp: a record at the size limits (16 KiB read per hit).
capture_list largest_captures() {
  auto specs = std::make_shared<std::vector<capture_spec>>();
  auto rsp = *parse_address_expr("rsp", drv::calling_convention::sysv).expr;
  for (size_t i = 0; i < defaults::max_captures; ++i)
    specs->push_back({"c" + std::to_string(i), capture_spec::kind::bytes, rsp,
                      uint32_t(defaults::max_capture_bytes_per_hit / defaults::max_captures),
                      "rsp"});
  return {std::move(specs)};
}

}  // namespace

void engine_trial(uint64_t seed, tally& t) {
  dice d(seed);
  sim::hypervisor_config hc;
  if (d.one_in(3))
    hc.exit_latency = std::chrono::microseconds(d.below(40));
  bool on_xen = d.one_in(3);
  auto xen_run = on_xen ? std::make_unique<xen_scenario>(hc) : nullptr;
  auto sim_run = on_xen ? nullptr : std::make_unique<scenario>(hc);
  scenario& s = on_xen ? *xen_run : *sim_run;
  fake_xen* xen = on_xen ? &xen_run->xen : nullptr;
  s.cfg.pollers = 1 + d.below(2);
  s.cfg.detached_children = d.one_in(4);
  if (d.one_in(3))
    s.cfg.ended_reports_kept = 1 + d.below(2);  // re-attached domains' sessions get folded
  auto count = 1 + d.below(4);
  std::vector<const sim::program*> code;
  for (size_t i = 0; i < count; ++i) {
    uint32_t vcpus = uint32_t(1 + d.below(3));
    uint64_t budget = d.one_in(3) ? 20000 + d.below(200000) : 0;
    auto dom = s.add("c" + std::to_string(i), vcpus, budget, step_mode(d.below(3)),
                     vcpus > 1 && d.one_in(2), seed * 16 + i + 1);
    code.push_back(&dom->code());
  }
  // Slow or blocking handlers on the first domain, with a deadline they often miss.
  std::optional<trial_handlers> handlers;
  if (d.one_in(3)) {
    handlers.emplace(std::chrono::microseconds(d.below(3000)));
    s.handlers = handlers->registry;
    auto plan = std::make_shared<domain_plan>(*s.cfg.domains[0].plan);
    auto fns = code[0]->functions();
    auto fn = d.below(std::min<size_t>(fns.size(), 4));
    plan->breakpoints.push_back({{"handled",
                                  plan->views[0],
                                  {},
                                  {},
                                  handler_binding{d.one_in(3) ? "block" : "slow",
                                                  std::chrono::microseconds(100 + d.below(3000))},
                                  {},
                                  {}},
                                 breakpoint_target::physical(fns[fn].entry_pa)});
    s.cfg.domains[0].plan = plan;
  }
  // The last domain armed by symbol from its kernel's profile as well, one breakpoint
  // reporting only the first process: the kernel found at every (re-)attach, filtered hits
  // counted.
  if (d.one_in(3)) {
    auto& last = *s.domains.back();
    auto json = sim::kernel_profile_json(last.config());
    auto profile = json ? drv::parse_profile(*json, "campaign.isf.json")
                        : caf::expected<drv::kernel_profile>(json.error());
    EXPECT_TRUE(profile) << render(profile.error());
    auto& entry = s.cfg.domains.back();
    auto plan = std::make_shared<domain_plan>(*entry.plan);
    plan->profile = std::make_shared<const drv::kernel_profile>(std::move(*profile));
    const auto& k = last.layout().kernel;
    for (size_t f = 0; f < 3; ++f) {
      breakpoint_def def;
      def.options.name = "sym_" + k.function_names[f];
      def.options.view = plan->views[0];
      if (f == 1)
        def.options.processes = {k.processes[0].name};
      def.target.by = breakpoint_target::kind::symbol;
      def.target.symbol = k.function_names[f];
      plan->breakpoints.push_back(std::move(def));
    }
    entry.plan = plan;
  }
  // Records at the size limits into a sink that holds few of them.
  bool heavy_sink = d.one_in(4);
  if (heavy_sink) {
    s.add_jsonl_sink("campaign");
    s.cfg.sinks.back().queue_bytes = size_t(1) << 20;
    auto plan = std::make_shared<domain_plan>(*s.cfg.domains[0].plan);
    for (auto& bp : plan->breakpoints)
      bp.options.captures = largest_captures();
    s.cfg.domains[0].plan = plan;
    s.cfg.domains[0].sinks = {"hits"};
  }
  domain_slots slots{s.domains};

  // The schedule, in ms from the start: faults on their own thread, reloads and the stop
  // here. The stop comes anywhere from at once (mid-attach) to half a second in.
  std::vector<std::pair<uint64_t, fault>> faults;
  for (auto n = d.below(6); n > 0; --n)
    faults.push_back({d.below(400), fault(d.below(fault_kinds))});
  std::sort(faults.begin(), faults.end());
  std::vector<uint64_t> reloads;
  for (auto n = d.below(5); n > 0; --n)
    reloads.push_back(d.below(400));
  std::sort(reloads.begin(), reloads.end());
  uint64_t stop_at = d.one_in(4) ? d.below(3) : d.below(500);
  std::vector<engine_config> configs;
  for (size_t i = 0; i < reloads.size(); ++i)
    configs.push_back(next_config(s.cfg, code, d));
  std::vector<size_t> targets;
  for (size_t i = 0; i < faults.size(); ++i)
    targets.push_back(d.below(count));
  dice fault_dice(seed ^ 0x5eed);

  std::set<drv::domain_id> faulty;  // domains whose driver calls were made to fail
  engine eng{s.cfg, s.make_driver()};
  ASSERT_FALSE(eng.start());
  auto t0 = clock_type::now();
  std::thread injector([&] {
    for (size_t i = 0; i < faults.size(); ++i) {
      sleep_until(t0, faults[i].first);
      auto id = slots.at(targets[i])->id();
      if (inject(faults[i].second, slots, targets[i], *s.hv, xen, fault_dice))
        faulty.insert(id);
    }
  });
  size_t applied = 0;
  for (size_t i = 0; i < reloads.size() && reloads[i] < stop_at; ++i) {
    sleep_until(t0, reloads[i]);
    applied += !eng.reload(configs[i]);  // a domain that died meanwhile may refuse it
  }
  sleep_until(t0, stop_at);
  auto reports = eng.stop();
  injector.join();
  t.faults += faults.size();
  t.reloads += applied;
  EXPECT_FALSE(eng.abandoned()) << "a blocking handler is not a stuck driver call";
  if (handlers) {
    handlers->release->store(true);
    EXPECT_TRUE(eventually([&] { return eng.handler_calls_running() == 0; }));
  }
  if (xen_run)
    xen_run->expect_clean();
  // Each record a sink was offered is written, dropped (its queue full, in records or bytes)
  // or counted as an error: nothing vanishes.
  if (heavy_sink) {
    auto families = eng.collect();
    double offered = 0, accounted = 0;
    for (auto& r : reports)
      if (r.name == "c0")  // the one domain whose records go to the sink
        for (auto* list : {&r.breakpoints, &r.removed})
          for (auto& bp : *list)
            offered += double(bp.hits);
    for (auto result : {"written", "dropped", "error"})
      accounted +=
        metric_value(families, "vmitap_sink_records_total", {{"sink", "hits"}, {"result", result}})
          .value_or(0);
    bool complete =
      std::all_of(reports.begin(), reports.end(), [](auto& r) { return r.error.empty(); });
    if (complete) {
      EXPECT_EQ(accounted, offered) << "records offered to the sink and accounted for";
    }
  }

  // Every domain the sim ever ran: each request answered once (or dropped by its death),
  // nothing paused or changed, no view left, and nobody attached any more.
  for (auto& dom : s.hv->domains()) {
    auto inv = dom->check();
    EXPECT_TRUE(inv.holds()) << dom->info().name << " (" << dom->id() << "): raised "
                             << inv.requests_raised << ", answered " << inv.requests_answered
                             << ", by detach " << inv.answered_by_detach << ", dropped "
                             << inv.dropped_by_death << ", unanswered " << inv.unanswered
                             << ", paused " << inv.paused_vcpus << ", pages changed "
                             << inv.pages_changed << ", views left " << inv.views_left;
    EXPECT_EQ(inv.answered_by_detach, 0u) << dom->info().name << ": the engine answers itself";
    if (dom->state() == drv::domain_state::running) {
      auto probe = dom->attach();
      EXPECT_TRUE(probe) << dom->info().name << " is still attached after the stop";
      if (probe)
        dom->detach(*probe);
    }
  }
  // Hits against ground truth for every breakpoint armed through one whole session.
  std::map<drv::domain_id, size_t> sessions;
  for (auto& r : reports)
    sessions[r.id] += r.sessions;
  for (auto& r : reports) {
    t.events += r.totals.events;
    if (!r.error.empty()) {
      EXPECT_TRUE(faulty.count(r.id)) << r.name << " (" << r.id << "): " << r.error;
      continue;
    }
    auto dom = s.hv->find(r.id);
    if (!dom || r.died || sessions[r.id] > 1)
      continue;
    for (auto& bp : r.breakpoints) {
      if (bp.live || bp.suppressions > 0)
        continue;
      auto truth = dom->reached(bp.pa, bp.view);
      EXPECT_EQ(bp.hits + bp.filtered, truth) << r.name << " " << bp.name;
      t.hits_checked += truth;
    }
  }
  ++t.trials;
}

}  // namespace vmitap::testing::campaign
