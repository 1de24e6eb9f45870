// The loadable module: kernel code that is absent at first and that VCPU 0 pages in and out
// while the guest runs. These tests play, by hand, a monitor that follows the module's page
// tables (write-protecting them in its view), and hold the sim to what such a monitor relies
// on: each page-table store and each accessed-bit write traps once, and no VCPU runs module
// code before the loader's step after its last store.

#include "drivers/guest/kernel.hpp"
#include "drivers/guest/page_walker.hpp"
#include "drivers/guest/profile.hpp"
#include "tests/support/sim_fixture.hpp"

#include <algorithm>
#include <cstring>
#include <functional>
#include <set>
#include <thread>

using namespace vmitap;
using namespace vmitap::testing;
using drv::event_reason;
using drv::page_access;
namespace flag = drv::flag;
namespace pte = drv::pte;

namespace {

/// Half of 64 functions in the module: two or more pages of module code.
sim::domain_config with_module(uint32_t vcpus, uint32_t interval = 4) {
  auto cfg = small_domain(vcpus);
  cfg.workload.functions = 64;
  cfg.workload.module_functions = 32;
  cfg.module_interval = interval;
  return cfg;
}

class sim_module : public sim_fixture {
protected:
  const sim::program& code() { return dom->code(); }
  const sim::guest_layout& layout() { return dom->layout(); }
  size_t module_pages() { return layout().module_ptes.size(); }
  uint64_t va_of(uint64_t pa) { return layout().kernel.va_of(pa); }
  uint64_t entry_va(uint32_t function) { return va_of(code().functions()[function].entry_pa); }

  drv::translation translate(uint64_t va) {
    drv::page_walker walker{*session};  // one per look: the guest changes its tables
    return walker.translate(layout().processes[0].cr3, va);
  }

  /// The module page whose PTE is at `pa`, if one's is.
  std::optional<size_t> pte_index(uint64_t pa) {
    const auto& ptes = layout().module_ptes;
    auto i = std::find(ptes.begin(), ptes.end(), pa);
    if (i == ptes.end())
      return std::nullopt;
    return size_t(i - ptes.begin());
  }

  /// Executions of every module instruction reached in `view`, summed.
  uint64_t module_executions(drv::view_id view) {
    uint64_t n = 0;
    for (auto i = code().first_module_instruction(); i < code().size(); ++i)
      n += dom->executions(code().at(i).pa, view);
    return n;
  }

  void set_tables(drv::view_id view, page_access value) {
    for (auto gfn : layout().module_table_gfns)
      set(view, gfn, gfn, value);
  }
  void set_module_pages(drv::view_id view, page_access value) {
    set(view, code().first_module_gfn(), code().last_module_gfn(), value);
  }

  /// Hands each request to `on` and runs slices until `done` or nothing can run.
  void run_monitor(const std::function<void(const drv::event&)>& on,
                   const std::function<bool()>& done, size_t max_rounds = 400000) {
    std::vector<drv::event> buf(8);
    for (size_t round = 0; round < max_rounds && !done(); ++round) {
      auto n = ring->take(buf);
      for (size_t i = 0; i < n; ++i)
        on(buf[i]);
      if (n == 0 && hv->run_pending(1) == 0)
        return;
    }
  }

  /// Runs slices with nothing watched until `done`.
  bool run_until(const std::function<bool()>& done, size_t max_slices = 100000) {
    for (size_t i = 0; i < max_slices && !done(); ++i)
      if (hv->run_pending(1) == 0)
        break;
    return done();
  }

  /// Puts every access back, leaves the view and detaches: the invariants must hold.
  void end_session(drv::view_id view) {
    ASSERT_FALSE(session->switch_all(0));
    ASSERT_FALSE(session->destroy_view(view));
    ASSERT_FALSE(session->detach());
    auto inv = dom->check();
    EXPECT_TRUE(inv.holds()) << "raised " << inv.requests_raised << ", answered "
                             << inv.requests_answered << ", by detach " << inv.answered_by_detach
                             << ", paused " << inv.paused_vcpus << ", changed "
                             << inv.pages_changed;
  }
};

TEST_F(sim_module, module_code_starts_a_page_of_its_own_and_its_size_is_checked) {
  boot(with_module(1));
  const auto& c = code();
  ASSERT_TRUE(c.has_module());
  EXPECT_EQ(c.first_module_function(), 32u);
  auto first = c.functions()[32].first;
  EXPECT_EQ(c.first_module_instruction(), first);
  EXPECT_EQ(c.at(first).pa & drv::page_mask, 0u) << "on a page boundary";
  EXPECT_EQ(drv::gfn_of(c.at(first).pa), c.first_module_gfn());
  EXPECT_EQ(c.last_module_gfn(), c.last_code_gfn());
  for (uint32_t i = 0; i < c.size(); ++i) {
    ASSERT_EQ(c.in_module(i), i >= first);
    ASSERT_EQ(c.is_module_gfn(drv::gfn_of(c.at(i).pa)), c.in_module(i))
      << "module pages hold module code only";
  }
  for (uint32_t f = 0; f < c.functions().size(); ++f)
    EXPECT_EQ(c.is_module_function(f), f >= 32u);
  EXPECT_GE(module_pages(), 2u);
  EXPECT_EQ(module_pages(), c.last_module_gfn() - c.first_module_gfn() + 1);
  EXPECT_FALSE(c.is_module_gfn(c.last_data_gfn())) << "data pages follow, not the module's";
  EXPECT_LT(layout().kernel.syscall_entry, c.first_module_function())
    << "MSR_LSTAR always translates";
  EXPECT_EQ(layout().kernel.function_names[layout().kernel.syscall_entry], "entry_SYSCALL_64");

  auto cfg = with_module(1);
  cfg.workload.module_functions = cfg.workload.functions;
  auto err = sim::domain::validate(cfg);
  EXPECT_EQ(code_of(err), ec::invalid_argument);
  EXPECT_NE(render(err).find("module_functions"), std::string::npos) << render(err);
  cfg = with_module(1);
  cfg.module_interval = 0;
  EXPECT_EQ(code_of(sim::domain::validate(cfg)), ec::invalid_argument);
  cfg.workload.module_functions = 0;
  EXPECT_FALSE(sim::domain::validate(cfg)) << "without a module the interval means nothing";

  auto plain = sim::prepare_guest(small_domain(1));
  ASSERT_TRUE(plain);
  EXPECT_FALSE(plain->code.has_module());
  EXPECT_EQ(plain->code.first_module_instruction(), plain->code.size());
  EXPECT_FALSE(plain->code.is_module_gfn(plain->code.first_code_gfn()));
  EXPECT_TRUE(plain->guest.layout.module_ptes.empty());
  EXPECT_TRUE(plain->guest.layout.module_table_gfns.empty());
}

TEST_F(sim_module, the_walker_sees_module_pages_not_present_until_loaded_and_again_after) {
  boot(with_module(1));
  auto f = code().first_module_function() + 3;
  auto pa = code().functions()[f].entry_pa;
  auto entry = layout().module_pte_pa(drv::gfn_of(pa));
  ASSERT_EQ(layout().module_table_gfns.size(), 1u);
  EXPECT_EQ(drv::gfn_of(entry), layout().module_table_gfns[0]) << "a table of its own";

  auto absent = [&] {
    auto t = translate(entry_va(f));
    EXPECT_EQ(t.fault, drv::translation_fault::not_present);
    EXPECT_EQ(t.level, 1u) << "the PTE itself";
    EXPECT_EQ(t.entry_pa, entry);
    EXPECT_EQ(read64(entry) & pte::address_mask, drv::pa_of(drv::gfn_of(pa))) << "frame kept";
  };
  absent();
  // The region's other pages are present (accessed already); other regions keep 2 MiB pages.
  auto t = translate(entry_va(0));
  ASSERT_TRUE(t);
  EXPECT_EQ(t.level, 1u);
  EXPECT_EQ(t.pa, code().functions()[0].entry_pa);
  EXPECT_TRUE(read64(t.entry_pa) & pte::accessed);
  t = translate(va_of(drv::pa_of(layout().last_reserved_gfn)));
  ASSERT_TRUE(t);
  EXPECT_EQ(t.level, 2u);

  ASSERT_TRUE(run_until([&] { return dom->module_loaded(); }));
  t = translate(entry_va(f));
  ASSERT_TRUE(t) << drv::to_string(t.fault);
  EXPECT_EQ(t.level, 1u);
  EXPECT_EQ(t.pa, pa);
  EXPECT_EQ(t.entry_pa, entry);
  EXPECT_EQ(dom->module_truth().loads, 1u);

  ASSERT_TRUE(run_until([&] { return dom->module_truth().unloads == 1; }));
  EXPECT_FALSE(dom->module_loaded());
  absent();
  auto truth = dom->module_truth();
  EXPECT_EQ(truth.pte_stores, 2 * module_pages());
  EXPECT_EQ(truth.executed_while_absent, 0u);
}

TEST_F(sim_module, the_kernel_is_found_with_its_module_out_and_module_symbols_name_their_pages) {
  for (auto abi : {drv::calling_convention::sysv, drv::calling_convention::ms_x64}) {
    auto cfg = with_module(2);
    cfg.abi = abi;
    boot(cfg);
    auto json = sim::kernel_profile_json(cfg);
    ASSERT_TRUE(json) << render(json.error());
    auto profile = drv::parse_profile(*json, "sim-module.json");
    ASSERT_TRUE(profile) << render(profile.error());
    ASSERT_FALSE(session->pause());
    auto k = drv::locate_kernel(*session, *profile, cfg.vcpus);
    ASSERT_TRUE(k) << render(k.error());
    for (auto f = code().first_module_function(); f < code().functions().size(); ++f) {
      auto value = profile->symbol(layout().kernel.function_names[f]);
      ASSERT_TRUE(value) << layout().kernel.function_names[f];
      EXPECT_EQ(k->va_of(*value), entry_va(f));
      auto t = translate(entry_va(f));
      EXPECT_EQ(t.fault, drv::translation_fault::not_present);
      EXPECT_EQ(t.entry_pa, layout().module_pte_pa(drv::gfn_of(code().functions()[f].entry_pa)));
    }
    ASSERT_FALSE(session->resume());
    ASSERT_FALSE(session->detach());
  }
}

// Nothing watched: the module comes and goes, and module code retires only while it is in.
// Independently of the sim's own count: in every slice that began and ended with the module
// out (no load completed in between), no module instruction retired.
TEST_F(sim_module, module_code_runs_only_while_the_module_is_loaded) {
  auto cfg = with_module(2);
  cfg.instructions_per_vcpu = 30000;
  boot(cfg);
  size_t out_slices = 0, busy_slices = 0;
  auto executed = module_executions(0);
  for (size_t i = 0; i < 10000 && !dom->halted(); ++i) {
    auto before = dom->module_truth();
    ASSERT_GT(hv->run_pending(1), 0u);
    auto after = dom->module_truth();
    auto now = module_executions(0);
    if (before.loads == before.unloads && after.loads == before.loads) {
      ++out_slices;
      ASSERT_EQ(now, executed) << "module code ran while the module was out";
    } else if (now > executed) {
      ++busy_slices;
    }
    executed = now;
  }
  ASSERT_TRUE(dom->halted());
  auto truth = dom->module_truth();
  EXPECT_GT(out_slices, 50u);
  EXPECT_GT(busy_slices, 50u);
  EXPECT_GE(truth.loads, 5u);
  EXPECT_GE(truth.unloads, 5u);
  EXPECT_EQ(truth.executed_while_absent, 0u);
  EXPECT_EQ(truth.module_instructions, executed);
  auto transitions = truth.loads + truth.unloads;
  EXPECT_GE(truth.pte_stores, transitions * module_pages());
  EXPECT_LT(truth.pte_stores, (transitions + 1) * module_pages());
  EXPECT_GE(truth.accessed_bits_set, truth.loads - 1) << "most loads run module code";
  EXPECT_EQ(truth.table_write_traps, 0u);
  EXPECT_EQ(truth.accessed_bit_traps, 0u);
  EXPECT_EQ(truth.pages_monitored_while_absent, 0u);
  EXPECT_EQ(dom->vcpu_retired(0), 30000u) << "the loader's stores are not the workload's";
  ASSERT_FALSE(session->detach());
  EXPECT_TRUE(dom->check().holds());
}

// One VCPU, the module's table write-protected in its view: every PTE store raises exactly one
// W request (the loader's rip), every first walk to a module page after a load one more (with
// in_page_walk), each answered in turn by fast singlestep, classic singlestep and EMULATE;
// the write lands after the answer, not before.
TEST_F(sim_module, each_store_and_each_first_walk_raise_one_write_request_whatever_steps_it) {
  boot(with_module(1, 16));  // long enough loaded for module code to run each time
  auto view = monitored_view();
  set_tables(view, page_access::rx);
  struct landing {
    uint64_t pa = 0;
    bool walk = false;
    bool loading = false;
  };
  std::optional<landing> pending;  // answered, not known to have landed yet
  auto landed = [&](const landing& l) {
    auto now = read64(l.pa);
    return l.walk ? (now & pte::accessed) != 0 : bool(now & pte::present) == l.loading;
  };
  size_t next_store = 0;
  bool loading = false;
  std::set<std::pair<uint64_t, size_t>> walked;  // (load, page)
  std::array<uint64_t, 3> stores{}, walks{};     // by answer: fast, classic, emulate
  auto answer = [&](const drv::event& ev, uint64_t turn) {
    if (turn % 3 == 0)
      fast_step(ev, view);
    else if (turn % 3 == 1)
      respond(ev, flag::toggle_singlestep | flag::alternate_p2m, 0);
    else
      respond(ev, flag::emulate);
  };
  auto on = [&](const drv::event& ev) {
    ASSERT_EQ(ev.vcpu, 0u);
    if (pending) {  // the VCPU ran since the answer: the write is in
      EXPECT_TRUE(landed(*pending));
      pending.reset();
    }
    if (ev.reason == event_reason::singlestep) {
      respond(ev, flag::toggle_singlestep | flag::alternate_p2m, view);
      return;
    }
    ASSERT_EQ(ev.reason, event_reason::mem_access);
    ASSERT_EQ(ev.mem.attempted, page_access::w);
    ASSERT_TRUE(ev.mem.gla_valid);
    auto pa = drv::pa_of(ev.mem.gfn, ev.mem.offset);
    auto index = pte_index(pa);
    ASSERT_TRUE(index) << "only module PTEs are written";
    auto before = read64(pa);
    if (ev.mem.in_page_walk) {
      auto rip_pa = layout().kernel.pa_of(ev.regs.rip);
      EXPECT_EQ(ev.mem.gla, ev.regs.rip) << "the walk's address: the instruction's";
      ASSERT_TRUE(code().is_module_gfn(drv::gfn_of(rip_pa)));
      EXPECT_EQ(layout().module_pte_pa(drv::gfn_of(rip_pa)), pa);
      EXPECT_TRUE(before & pte::present);
      EXPECT_FALSE(before & pte::accessed) << "not set before the answer";
      EXPECT_TRUE(walked.insert({dom->module_truth().loads, *index}).second)
        << "one walk request per page and load";
      pending = landing{pa, true, false};
      answer(ev, walks[0] + walks[1] + walks[2]);
      ++walks[(walks[0] + walks[1] + walks[2]) % 3];
      return;
    }
    EXPECT_EQ(ev.regs.rip, va_of(layout().loader_store_pa));
    EXPECT_EQ(ev.mem.gla, va_of(pa));
    EXPECT_EQ(*index, next_store) << "one request per store, in page order";
    if (*index == 0)
      loading = !(before & pte::present);
    EXPECT_EQ(bool(before & pte::present), !loading) << "not stored before the answer";
    next_store = (next_store + 1) % module_pages();
    pending = landing{pa, false, loading};
    answer(ev, stores[0] + stores[1] + stores[2]);
    ++stores[(stores[0] + stores[1] + stores[2]) % 3];
  };
  run_monitor(on, [&] {
    auto t = dom->module_truth();
    return t.loads >= 4 && t.unloads >= 3;
  });
  for (auto& ev : take_all())  // nothing runs now: these are the last
    on(ev);
  auto truth = dom->module_truth();
  ASSERT_GE(truth.loads, 4u);
  ASSERT_GE(truth.unloads, 3u);
  auto all_stores = stores[0] + stores[1] + stores[2];
  auto all_walks = walks[0] + walks[1] + walks[2];
  bool in_flight = pending && !landed(*pending);  // answered, the VCPU has not run since
  EXPECT_EQ(truth.table_write_traps, all_stores);
  EXPECT_EQ(truth.pte_stores + (in_flight && !pending->walk), all_stores);
  EXPECT_EQ(truth.accessed_bit_traps, all_walks);
  EXPECT_EQ(truth.accessed_bits_set + (in_flight && pending->walk), all_walks)
    << "every accessed bit set was asked for";
  EXPECT_GE(all_walks, truth.loads - 1);
  for (int k = 0; k < 3; ++k) {
    EXPECT_GT(stores[k], 0u) << "answer " << k;
    EXPECT_GT(walks[k], 0u) << "answer " << k;
  }
  EXPECT_EQ(truth.executed_while_absent, 0u);
  set_tables(view, page_access::rwx);
  end_session(view);
}

// A monitor that follows the module as the engine's pending breakpoints do: it write-protects
// the module's table, steps each store with classic singlestep and, held on the singlestep
// after a load's last store, arms (X denied on module pages) while the other VCPUs run on:
// none of them runs module code meanwhile. Held after an unload's last store, it disarms; the
// ground truth then finds no module page watched. Every module instruction reached in its
// view is a hit it saw (an X request, or a walk request at it).
TEST_F(sim_module, a_monitor_holding_the_loader_after_its_last_store_arms_before_module_code_runs) {
  // No instruction budget: a VCPU in the module crawls (every instruction traps) while VCPU 0
  // runs free, and none may stop in the module, or no unload could complete.
  boot(with_module(3));
  auto view = monitored_view();
  set_tables(view, page_access::rx);
  bool armed = false, after_last_store = false;
  std::optional<drv::event> held;
  uint64_t hits = 0, held_loads = 0, held_unloads = 0, plain_module_calls = 0;
  std::vector<uint32_t> module_calls;  // call instructions whose callee is the module's
  for (uint32_t i = 0; i < code().first_module_instruction(); ++i)
    if (code().at(i).kind == sim::op::call && code().is_module_function(code().at(i).target))
      module_calls.push_back(i);
  ASSERT_FALSE(module_calls.empty());
  auto calls_into_module = [&] {
    uint64_t n = 0;
    for (auto i : module_calls)
      n += dom->executions(code().at(i).pa, view);
    return n;
  };
  auto on = [&](const drv::event& ev) {
    if (ev.reason == event_reason::singlestep) {
      ASSERT_EQ(ev.vcpu, 0u);
      if (after_last_store) {
        after_last_store = false;
        held = ev;
        return;
      }
      respond(ev, flag::toggle_singlestep | flag::alternate_p2m, view);
      return;
    }
    ASSERT_EQ(ev.reason, event_reason::mem_access);
    auto pa = drv::pa_of(ev.mem.gfn, ev.mem.offset);
    if (auto index = pte_index(pa)) {
      if (ev.mem.in_page_walk) {
        EXPECT_TRUE(armed) << "module code runs only once armed";
        ++hits;  // its fetch comes next, in view 0: the breakpoint's hit is this request
        fast_step(ev, view);
        return;
      }
      ASSERT_EQ(ev.vcpu, 0u);
      after_last_store = *index + 1 == module_pages();
      respond(ev, flag::toggle_singlestep | flag::alternate_p2m, 0);
      return;
    }
    ASSERT_EQ(ev.mem.attempted, page_access::x);
    EXPECT_TRUE(code().is_module_gfn(ev.mem.gfn));
    EXPECT_TRUE(armed);
    ++hits;
    fast_step(ev, view);
  };
  auto release_held = [&] {
    auto probe = translate(entry_va(code().first_module_function()));
    if (probe) {  // a load: the tables say present, the module is not callable yet
      ++held_loads;
      EXPECT_FALSE(dom->module_loaded());
      auto truth = dom->module_truth();
      auto calls = calls_into_module();
      auto others = dom->vcpu_retired(1) + dom->vcpu_retired(2);
      run_monitor(on, [&] { return dom->vcpu_retired(1) + dom->vcpu_retired(2) >= others + 4000; });
      EXPECT_GE(dom->vcpu_retired(1) + dom->vcpu_retired(2), others + 4000) << "the others ran";
      EXPECT_EQ(dom->module_truth().module_instructions, truth.module_instructions)
        << "no module code before the loader's next step";
      EXPECT_FALSE(dom->module_loaded());
      plain_module_calls += calls_into_module() - calls;
      set_module_pages(view, page_access::rw);
      armed = true;
    } else {
      ++held_unloads;
      EXPECT_EQ(probe.fault, drv::translation_fault::not_present);
      set_module_pages(view, page_access::rwx);
      armed = false;
    }
    auto ev = *held;
    held.reset();
    respond(ev, flag::toggle_singlestep | flag::alternate_p2m, view);
  };
  for (int round = 0; round < 40 && (held_loads < 3 || held_unloads < 3); ++round) {
    run_monitor(on, [&] { return held.has_value(); });
    ASSERT_TRUE(held) << "the loader reached no last store in round " << round;
    release_held();
  }
  EXPECT_GE(held_loads, 3u);
  EXPECT_GE(held_unloads, 3u);
  EXPECT_GT(plain_module_calls, 0u) << "the others did call into the module while it was out";
  for (auto& ev : take_all())  // nothing runs from here on
    on(ev);
  if (held)
    respond(*held, flag::toggle_singlestep | flag::alternate_p2m, view);
  auto truth = dom->module_truth();
  EXPECT_EQ(truth.pages_monitored_while_absent, 0u);
  EXPECT_EQ(truth.executed_while_absent, 0u);
  EXPECT_GT(truth.accessed_bit_traps, 0u);
  uint64_t reached = 0;
  for (auto i = code().first_module_instruction(); i < code().size(); ++i)
    reached += dom->reached(code().at(i).pa, view);
  EXPECT_GT(reached, 100u);
  EXPECT_EQ(hits, reached) << "every module instruction reached in the view was seen";
  set_tables(view, page_access::rwx);
  set_module_pages(view, page_access::rwx);
  end_session(view);
}

// A monitor that never disarms: at each unload every module page still lacks X in its view.
TEST_F(sim_module, an_unload_counts_the_module_pages_a_view_still_watches) {
  boot(with_module(1));
  auto view = monitored_view();
  set_module_pages(view, page_access::rw);
  run_monitor([&](const drv::event& ev) { fast_step(ev, view); },
              [&] { return dom->module_truth().unloads >= 2; });
  auto truth = dom->module_truth();
  ASSERT_EQ(truth.unloads, 2u);
  EXPECT_EQ(truth.pages_monitored_while_absent, 2 * module_pages());
  for (auto& ev : take_all())
    fast_step(ev, view);
  set_module_pages(view, page_access::rwx);
  end_session(view);
}

// Detached in the middle of a load, with a store's request outstanding: detach answers it and
// leaves nothing paused; attached again, the loader finishes the load.
TEST_F(sim_module, a_detach_in_the_middle_of_a_transition_leaves_nothing_paused) {
  boot(with_module(2));
  auto view = monitored_view();
  set_tables(view, page_access::rx);
  std::optional<drv::event> store;
  run_monitor(
    [&](const drv::event& ev) {
      if (ev.reason == event_reason::mem_access &&
          pte_index(drv::pa_of(ev.mem.gfn, ev.mem.offset)) && !ev.mem.in_page_walk &&
          *pte_index(drv::pa_of(ev.mem.gfn, ev.mem.offset)) == 1) {
        store = ev;  // the second store of the first load: held
        return;
      }
      if (ev.reason == event_reason::singlestep)
        respond(ev, flag::toggle_singlestep | flag::alternate_p2m, view);
      else
        respond(ev, flag::toggle_singlestep | flag::alternate_p2m, 0);
    },
    [&] { return store.has_value(); });
  ASSERT_TRUE(store);
  EXPECT_FALSE(dom->module_loaded());
  EXPECT_EQ(dom->check().unanswered, 1u);
  set_tables(view, page_access::rwx);
  end_session(view);
  EXPECT_EQ(dom->check().answered_by_detach, 1u);

  auto again = driver.attach(dom->id());
  ASSERT_TRUE(again) << render(again.error());
  session = std::move(*again);
  auto r = session->start_events();
  ASSERT_TRUE(r);
  ring = *r;
  ASSERT_TRUE(run_until([&] { return dom->module_loaded(); })) << "the load goes on";
  EXPECT_TRUE(take_all().empty());
  ASSERT_FALSE(session->detach());
  EXPECT_TRUE(dom->check().holds());
  EXPECT_EQ(dom->module_truth().executed_while_absent, 0u);
}

TEST_F(sim_module, a_domain_killed_in_the_middle_of_a_transition_drops_its_request) {
  boot(with_module(2));
  auto view = monitored_view();
  set_tables(view, page_access::rx);
  std::optional<drv::event> store;
  run_monitor(
    [&](const drv::event& ev) {
      if (ev.reason == event_reason::mem_access && !ev.mem.in_page_walk) {
        store = ev;
        return;
      }
      fast_step(ev, view);
    },
    [&] { return store.has_value(); });
  ASSERT_TRUE(store);
  EXPECT_TRUE(pte_index(drv::pa_of(store->mem.gfn, store->mem.offset)));
  dom->kill();
  EXPECT_FALSE(give(drv::make_response(*store))) << "success, silently";
  EXPECT_FALSE(session->detach());
  auto inv = dom->check();
  EXPECT_EQ(inv.dropped_by_death, 1u);
  EXPECT_TRUE(inv.holds());
}

// Guest threads run the VCPUs at once: entering the module and the unload's check of who is
// in it race, and neither may miss the other (ThreadSanitizer runs this one too).
TEST_F(sim_module, vcpus_on_several_guest_threads_never_run_module_code_while_it_is_out) {
  // The fixture's members outlive the test's locals: the session goes before the host.
  hv = std::make_shared<sim::hypervisor>(
    sim::hypervisor_config{.threaded = true, .guest_threads = 2, .slice_instructions = 16});
  sim::sim_driver threaded_driver{hv};
  // No instruction budget: a VCPU that stops in the module would keep it in for good.
  auto made = hv->create_domain(with_module(4, 2));
  ASSERT_TRUE(made);
  dom = *made;
  auto attached = threaded_driver.attach(dom->id());
  ASSERT_TRUE(attached);
  session = std::move(*attached);
  ASSERT_TRUE(session->start_events());
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  auto enough = [&] {
    auto t = dom->module_truth();
    return t.loads >= 20 && t.unloads >= 20;
  };
  while (!enough() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::yield();
  ASSERT_FALSE(session->detach());  // the VCPUs stop with the session
  auto truth = dom->module_truth();
  EXPECT_GE(truth.loads, 20u);
  EXPECT_GE(truth.unloads, 20u);
  EXPECT_GT(truth.module_instructions, 1000u);
  EXPECT_EQ(truth.executed_while_absent, 0u);
  EXPECT_EQ(truth.module_instructions, module_executions(0));
  EXPECT_TRUE(dom->check().holds());
}

TEST_F(sim_module, without_a_module_nothing_comes_or_goes) {
  auto cfg = small_domain(2);
  cfg.instructions_per_vcpu = 5000;
  boot(cfg);
  hv->run_pending();
  ASSERT_TRUE(dom->halted());
  auto truth = dom->module_truth();
  EXPECT_EQ(truth.loads + truth.unloads + truth.pte_stores + truth.module_instructions, 0u);
  EXPECT_FALSE(dom->module_loaded());
  EXPECT_EQ(dom->instructions_retired(), 10000u);
}

}  // namespace
