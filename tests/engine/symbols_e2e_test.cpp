// Symbols end to end: a Linux- and a Windows-flavoured guest, each booted at its own KASLR
// slide, armed by symbol from the profile it was built with (what `vmitap sim-profile`
// writes), on the sim's driver and through the Xen driver on the fake Xen. Every breakpoint's hits
// equal the guest's executions; every record names the process the guest ran at that call (its
// ground truth); a processes filter leaves out the other processes' hits and counts them; a profile
// of another build arms nothing.

#include "drivers/guest/profile.hpp"
#include "drivers/sim/kernel.hpp"
#include "tests/support/hit_records.hpp"
#include "tests/support/xen_scenario.hpp"

#include <fstream>
#include <map>
#include <optional>
#include <set>

using namespace vmitap;
using namespace vmitap::testing;

namespace {

struct params {
  drv::calling_convention abi;
  step_mode mode;
  bool xen = false;  ///< the Xen driver on the fake Xen (registers from the HVM context)
};

std::shared_ptr<const drv::kernel_profile> profile_of(const sim::domain_config& dc) {
  auto json = sim::kernel_profile_json(dc);
  EXPECT_TRUE(json) << render(json.error());
  auto p = drv::parse_profile(*json, dc.name + ".isf.json");
  EXPECT_TRUE(p) << render(p.error());
  return std::make_shared<const drv::kernel_profile>(std::move(*p));
}

breakpoint_def by_symbol(std::string name, std::string symbol, uint64_t offset = 0,
                         std::vector<std::string> processes = {}) {
  breakpoint_def def;
  def.options.name = std::move(name);
  def.options.view = "main";
  def.options.processes = std::move(processes);
  def.target.by = breakpoint_target::kind::symbol;
  def.target.symbol = std::move(symbol);
  def.target.offset = offset;
  return def;
}

sim::domain_config guest(drv::calling_convention abi, uint64_t seed) {
  sim::domain_config dc;
  dc.name = abi == drv::calling_convention::sysv ? "linux-guest" : "windows-guest";
  dc.vcpus = 2;
  dc.instructions_per_vcpu = 150'000;
  dc.workload.seed = seed;
  dc.abi = abi;
  dc.processes = 4;
  dc.record_calls = true;
  return dc;
}

/// Arms symbols in a guest of `abi`, runs it in `mode`, and checks hits and records.
void check_symbols(scenario& s, drv::calling_convention abi, step_mode mode) {
  auto hits_path = s.add_jsonl_sink("symbols");
  auto dc = guest(abi, 31 + uint64_t(mode));
  auto dom = *s.hv->create_domain(dc);
  s.domains.push_back(dom);
  const auto& kernel = dom->layout().kernel;
  auto fns = dom->code().functions();

  auto plan = std::make_shared<domain_plan>();
  plan->mode = mode;
  plan->profile = profile_of(dc);
  std::map<std::string, uint64_t> entry_of;  // breakpoint → the sim's own address
  for (size_t f = 0; f < 4; ++f) {
    auto name = kernel.function_names[f];
    plan->breakpoints.push_back(by_symbol(name, name));
    entry_of[name] = fns[f].entry_pa;
  }
  auto body = dom->code().at(fns[0].first + fns[0].count / 2).pa;
  plan->breakpoints.push_back(by_symbol("body", kernel.function_names[0], body - fns[0].entry_pa));
  // Only the first two processes' hits of the second function.
  auto kept = std::vector<std::string>{kernel.processes[0].name, kernel.processes[1].name};
  plan->breakpoints.push_back(by_symbol("filtered", kernel.function_names[1], 0, kept));
  engine_config::domain_entry e;
  e.select.name = dc.name;
  e.plan = plan;
  e.sinks = {"hits"};
  s.cfg.domains.push_back(e);

  auto reports = s.run();
  ASSERT_TRUE(s.verified(reports)) << "hits (and filtered hits) equal the executions";
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_EQ(find_bp(reports[0], "body").pa, body) << "symbol + offset";
  auto& filtered = find_bp(reports[0], "filtered");
  EXPECT_GT(filtered.filtered, 0u) << "the other processes ran the function too";
  EXPECT_GT(filtered.hits, 0u);
  EXPECT_EQ(reports[0].totals.filtered, filtered.filtered);

  auto records = read_records(hits_path);
  uint64_t checked = 0;
  std::set<uint32_t> pids;
  for (auto& [name, pa] : entry_of)
    for (uint32_t vcpu = 0; vcpu < dc.vcpus; ++vcpu) {
      auto calls = dom->calls(vcpu, pa);
      auto& recs = records[{vcpu, name}];
      // On Xen the guest runs from the monitor's enable until the attach pauses it: calls
      // reached in view 0 then were not monitored. A VCPU that halted between setting a
      // call up and fetching its entry leaves one call without a hit.
      auto unmonitored = dom->executions(vcpu, pa, 0);
      ASSERT_LE(unmonitored + recs.size(), calls.size()) << name << " vcpu " << vcpu;
      ASSERT_GE(unmonitored + recs.size() + 1, calls.size()) << name << " vcpu " << vcpu;
      for (size_t k = 0; k < recs.size(); ++k) {
        auto& r = recs[k];
        const auto& p = kernel.processes[calls[unmonitored + k].process];
        SCOPED_TRACE(name + " vcpu " + std::to_string(vcpu) + " call " + std::to_string(k));
        EXPECT_EQ(r["pid"], p.pid);
        EXPECT_EQ(r["tid"], p.tid(vcpu, kernel.os));
        EXPECT_EQ(r["ppid"], p.ppid);
        EXPECT_EQ(r["process"], p.name);
        pids.insert(p.pid);
        ++checked;
      }
    }
  EXPECT_GT(checked, 100u);
  EXPECT_GE(pids.size(), 3u) << "the VCPUs switched between processes";
  uint64_t filtered_records = 0;
  for (uint32_t vcpu = 0; vcpu < dc.vcpus; ++vcpu)
    for (auto& r : records[{vcpu, "filtered"}]) {
      auto process = r["process"].get<std::string>();
      EXPECT_TRUE(process == kept[0] || process == kept[1]) << process;
      ++filtered_records;
    }
  EXPECT_EQ(filtered_records, filtered.hits) << "every reported hit has its record";
}

/// Runs `check` on the sim's driver, or through the Xen driver on the fake Xen.
void on_driver(const params& p, void (*check)(scenario&, drv::calling_convention, step_mode)) {
  if (!p.xen) {
    scenario s;
    check(s, p.abi, p.mode);
    return;
  }
  xen_scenario s;
  check(s, p.abi, p.mode);
  s.expect_clean();
}

/// Both kernels in every step mode on the sim, and one of each through the fake Xen.
const auto every_kernel_and_mode =
  ::testing::Values(params{drv::calling_convention::sysv, step_mode::fast},
                    params{drv::calling_convention::sysv, step_mode::classic},
                    params{drv::calling_convention::sysv, step_mode::emulate},
                    params{drv::calling_convention::ms_x64, step_mode::fast},
                    params{drv::calling_convention::ms_x64, step_mode::classic},
                    params{drv::calling_convention::ms_x64, step_mode::emulate},
                    params{drv::calling_convention::sysv, step_mode::fast, true},
                    params{drv::calling_convention::ms_x64, step_mode::classic, true});

std::string name_of(const ::testing::TestParamInfo<params>& info) {
  return std::string(info.param.abi == drv::calling_convention::sysv ? "linux" : "windows") + "_" +
         to_string(info.param.mode) + (info.param.xen ? "_xen" : "");
}

class symbols_e2e : public ::testing::TestWithParam<params> {};

TEST_P(symbols_e2e, hits_by_symbol_are_exact_and_every_record_names_the_process_that_ran) {
  on_driver(GetParam(), check_symbols);
}

INSTANTIATE_TEST_SUITE_P(every, symbols_e2e, every_kernel_and_mode, name_of);

/// A guest whose module is paged in and out while it runs: every module function and two of
/// the resident kernel's are armed by symbol. The module's start pending (their page is not
/// mapped at attach), are armed at each load before any VCPU can run them, disarmed at each
/// unload; hits equal executions, and vmitap saw every trap on the module's page tables.
void check_pending(scenario& s, drv::calling_convention abi, step_mode mode) {
  auto dc = guest(abi, 41 + uint64_t(mode));
  dc.record_calls = false;
  dc.instructions_per_vcpu = 0;  // a VCPU halted inside the module would keep it loaded
  dc.workload.module_functions = 16;
  dc.module_interval = 6;
  auto dom = *s.hv->create_domain(dc);
  s.domains.push_back(dom);
  const auto& kernel = dom->layout().kernel;
  auto first_module = dom->code().first_module_function();
  auto pages = dom->layout().module_ptes.size();  // a store each per load or unload
  auto plan = std::make_shared<domain_plan>();
  plan->mode = mode;
  plan->profile = profile_of(dc);
  std::vector<std::string> module_bps;
  for (uint32_t f = first_module; f < dom->code().functions().size(); ++f) {
    module_bps.push_back(kernel.function_names[f]);
    plan->breakpoints.push_back(by_symbol(module_bps.back(), module_bps.back()));
  }
  for (uint32_t f = 0; f < 2; ++f)
    plan->breakpoints.push_back(by_symbol(kernel.function_names[f], kernel.function_names[f]));
  engine_config::domain_entry e;
  e.select.name = dc.name;
  e.plan = plan;
  s.cfg.domains.push_back(e);

  auto module_hits = [&](const domain_report& r) {
    uint64_t n = 0;
    for (auto& bp : r.breakpoints)
      if (std::find(module_bps.begin(), module_bps.end(), bp.name) != module_bps.end())
        n += bp.hits;
    return n;
  };
  auto reports = s.run_until([&](engine& eng) {
    auto status = eng.status();
    if (status.empty())
      return false;
    // Traps on its tables count only transitions made while vmitap watched them (on Xen the
    // guest runs a little before the attach pauses it).
    auto t = dom->module_truth();
    return t.table_write_traps >= 3 * 2 * pages && module_hits(status[0]) > 0;
  });
  ASSERT_TRUE(s.verified(reports)) << "hits equal executions; every page-table trap counted";
  ASSERT_EQ(reports.size(), 1u);
  auto truth = dom->module_truth();
  EXPECT_GT(module_hits(reports[0]), 0u);
  EXPECT_GE(truth.unloads, 2u);
  EXPECT_EQ(reports[0].totals.table_writes, truth.table_write_traps);
  EXPECT_EQ(reports[0].totals.table_bits, truth.accessed_bit_traps);
  EXPECT_EQ(truth.pages_monitored_while_absent, 0u) << "disarmed before every unload completed";
  EXPECT_EQ(truth.executed_while_absent, 0u);
}

class pending_e2e : public ::testing::TestWithParam<params> {};

TEST_P(pending_e2e, module_breakpoints_are_armed_at_page_in_disarmed_at_page_out_and_exact) {
  on_driver(GetParam(), check_pending);
}

INSTANTIATE_TEST_SUITE_P(every, pending_e2e, every_kernel_and_mode, name_of);

/// One guest monitored with a breakpoint on its first function, by symbol, from the profile
/// of its own build (or of the build `profile_seed` makes). The plan is the entry's: what a
/// test adds to it before the run is armed too.
struct symbol_guest {
  std::shared_ptr<sim::domain> dom;
  std::shared_ptr<domain_plan> plan;
};

symbol_guest add_symbol_guest(scenario& s, drv::calling_convention abi, uint64_t seed,
                              uint64_t budget, std::optional<uint64_t> profile_seed = {}) {
  auto dc = guest(abi, seed);
  dc.record_calls = false;
  dc.instructions_per_vcpu = budget;  // 0: runs until stopped
  auto dom = *s.hv->create_domain(dc);
  s.domains.push_back(dom);
  auto built = dc;
  built.workload.seed = profile_seed.value_or(seed);
  auto plan = std::make_shared<domain_plan>();
  plan->profile = profile_of(built);
  auto first = dom->layout().kernel.function_names[0];
  plan->breakpoints.push_back(by_symbol(first, first));
  engine_config::domain_entry e;
  e.select.name = dc.name;
  e.plan = plan;
  s.cfg.domains.push_back(e);
  return {dom, plan};
}

class symbols_refused : public ::testing::TestWithParam<drv::calling_convention> {};

TEST_P(symbols_refused, a_profile_of_another_build_arms_nothing_and_says_what_it_found) {
  scenario s;
  // The same kind of kernel, another build (seed 6's).
  auto g = add_symbol_guest(s, GetParam(), 5, 150'000, 6);
  auto& dom = g.dom;
  auto& plan = g.plan;

  auto reports = s.run_until([](engine& eng) {
    for (auto& r : eng.status())
      if (!r.error.empty())
        return true;
    return false;
  });
  ASSERT_EQ(reports.size(), 1u);
  auto& r = reports[0];
  EXPECT_FALSE(r.attached);
  EXPECT_TRUE(r.breakpoints.empty()) << "nothing was armed";
  EXPECT_NE(r.error.find("another build"), std::string::npos) << r.error;
  if (GetParam() == drv::calling_convention::sysv) {
    EXPECT_NE(r.error.find("expected banner"), std::string::npos) << r.error;
    auto found = dom->layout().kernel.banner;
    found.pop_back();  // its newline, shown escaped
    EXPECT_NE(r.error.find("found \"" + found), std::string::npos)
      << "the banner found is shown: " << r.error;
  } else {
    EXPECT_NE(r.error.find(dom->layout().kernel.pdb.guid), std::string::npos)
      << "the GUID found is shown: " << r.error;
    EXPECT_NE(r.error.find(plan->profile->pdb->guid), std::string::npos)
      << "and the one expected: " << r.error;
  }
  auto inv = dom->check();
  EXPECT_TRUE(inv.holds()) << "answered " << inv.requests_answered << " of " << inv.requests_raised
                           << ", paused " << inv.paused_vcpus << ", pages changed "
                           << inv.pages_changed;
  EXPECT_EQ(dom->instructions_retired(), 0u) << "the guest never ran unmonitored";
}

INSTANTIATE_TEST_SUITE_P(both, symbols_refused,
                         ::testing::Values(drv::calling_convention::sysv,
                                           drv::calling_convention::ms_x64),
                         [](const auto& info) {
                           return std::string(
                             info.param == drv::calling_convention::sysv ? "linux" : "windows");
                         });

}  // namespace

// Under KPTI a VCPU in user mode does not map the kernel: the attach lets the domain run
// between looks until one is in kernel mode, then arms as usual.
TEST(symbols_attach, waits_for_a_vcpu_in_kernel_mode_then_arms_exactly) {
  scenario s;
  auto g = add_symbol_guest(s, drv::calling_convention::sysv, 12, 150'000);
  auto& dom = g.dom;
  dom->in_user_mode_until(3);
  auto reports = s.run();
  ASSERT_TRUE(s.verified(reports));
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_TRUE(reports[0].attached);
  EXPECT_GT(reports[0].totals.hits, 0u);
}

TEST(symbols_attach, gives_up_when_no_vcpu_enters_kernel_mode_and_arms_nothing) {
  scenario s;
  auto g = add_symbol_guest(s, drv::calling_convention::ms_x64, 13, 150'000);
  auto& dom = g.dom;
  dom->in_user_mode_until(1'000'000);
  auto reports = s.run_until([](engine& eng) {
    for (auto& r : eng.status())
      if (!r.error.empty())
        return true;
    return false;
  });
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_FALSE(reports[0].attached);
  EXPECT_TRUE(reports[0].breakpoints.empty());
  EXPECT_NE(reports[0].error.find("no VCPU entered kernel mode in 250 looks"), std::string::npos)
    << reports[0].error;
  EXPECT_TRUE(dom->check().holds());
  EXPECT_EQ(dom->instructions_retired(), 0u);
}

// A reload translates the symbols it adds, with the guest running, against the kernel found
// at attach; what was armed before keeps counting exactly.
TEST(symbols_attach, a_reload_arms_the_symbols_it_adds) {
  scenario s;
  auto g = add_symbol_guest(s, drv::calling_convention::sysv, 14, 0);
  auto& dom = g.dom;
  auto& plan = g.plan;
  engine eng{s.cfg, std::make_shared<sim::sim_driver>(s.hv)};
  ASSERT_FALSE(eng.start());
  auto hits = [&](const std::string& name) -> uint64_t {
    for (auto& r : eng.status())
      for (auto& bp : r.breakpoints)
        if (bp.name == name)
          return bp.hits;
    return 0;
  };
  const auto& k = dom->layout().kernel;
  ASSERT_TRUE(eventually([&] { return hits(k.function_names[0]) > 0; }));
  auto next = s.cfg;
  auto plan2 = std::make_shared<domain_plan>(*plan);
  plan2->breakpoints.push_back(by_symbol("added", k.function_names[2]));
  next.domains[0].plan = plan2;
  ASSERT_FALSE(eng.reload(next));
  EXPECT_TRUE(eventually([&] { return hits("added") > 0; }));
  auto reports = eng.stop();
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_TRUE(reports[0].error.empty()) << reports[0].error;
  auto& added = find_bp(reports[0], "added");
  EXPECT_EQ(added.pa, dom->code().functions()[2].entry_pa);
  EXPECT_TRUE(added.live);
  auto first = dom->code().functions()[0].entry_pa;
  EXPECT_EQ(find_bp(reports[0], k.function_names[0]).hits, dom->reached(first, 1))
    << "armed throughout";
  EXPECT_TRUE(dom->check().holds());
}

// A reload adding an address no table maps now arms it as pending (reported so, at its last
// address 0); the stop gives its watched page table back its Write.
TEST(symbols_attach, a_reload_adds_an_unmapped_va_as_pending_and_the_stop_restores_its_watch) {
  scenario s;
  auto g = add_symbol_guest(s, drv::calling_convention::ms_x64, 15, 0);
  auto& dom = g.dom;
  auto& plan = g.plan;
  engine eng{s.cfg, std::make_shared<sim::sim_driver>(s.hv)};
  ASSERT_FALSE(eng.start());
  ASSERT_TRUE(eventually([&] {
    auto r = eng.status();
    return !r.empty() && r[0].totals.hits > 0;
  }));
  auto next = s.cfg;
  auto plan2 = std::make_shared<domain_plan>(*plan);
  breakpoint_def beyond;
  beyond.options.name = "beyond";
  beyond.options.view = "main";
  beyond.target.by = breakpoint_target::kind::virtual_address;
  // Past the kernel's map of RAM: no table maps it now; one may later.
  beyond.target.va = dom->layout().kernel.va_of(dom->layout().linear_bytes) + drv::page_size;
  plan2->breakpoints.push_back(beyond);
  next.domains[0].plan = plan2;
  ASSERT_FALSE(eng.reload(next));
  auto status = eng.status();
  ASSERT_EQ(status.size(), 1u);
  auto pending = std::find_if(status[0].breakpoints.begin(), status[0].breakpoints.end(),
                              [](auto& bp) { return bp.name == "beyond"; });
  ASSERT_NE(pending, status[0].breakpoints.end());
  EXPECT_TRUE(pending->pending);
  EXPECT_EQ(pending->pa, 0u);
  auto reports = eng.stop();
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_TRUE(dom->check().holds()) << "the watched page table's Write is back";
}
