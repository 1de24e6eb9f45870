// The simulated guest as a VMI tool reads it: x86-64 page tables in guest memory, per-process
// user halves, a not-present page, and at a function's entry the arguments where the calling
// convention puts them, strings behind the page tables. The walker here is the test's own.

#include "tests/support/sim_fixture.hpp"

#include <cstring>
#include <map>
#include <set>
#include <thread>

using namespace vmitap;
using namespace vmitap::testing;
namespace pte = drv::pte;

namespace {

struct walk_result {
  bool ok = false;
  uint64_t pa = 0;
  uint64_t page = 0;   ///< the page size that mapped it
  unsigned level = 0;  ///< on failure: the level whose entry was not present (4: PML4)
};

class sim_paging : public sim_fixture {
protected:
  /// Four levels; a PDPTE or PDE with the large bit ends the walk early (1 GiB, 2 MiB).
  walk_result walk(uint64_t cr3, uint64_t va) {
    if (!drv::canonical(va))
      return {};
    uint64_t table = drv::pml4_of(cr3);
    for (unsigned level = 4; level >= 1; --level) {
      auto entry = read64(table + 8 * drv::table_index(va, level));
      if (!(entry & pte::present))
        return {false, 0, 0, level};
      if ((level == 3 || level == 2) && (entry & pte::large)) {
        uint64_t size = uint64_t{1} << (12 + 9 * (level - 1));
        return {true, (entry & pte::address_mask & ~(size - 1)) | (va & (size - 1)), size, level};
      }
      table = entry & pte::address_mask;
    }
    return {true, table | (va & drv::page_mask), drv::page_size, 1};
  }

  std::optional<uint64_t> read_virtual64(uint64_t cr3, uint64_t va) {
    std::array<std::byte, 8> b{};
    if (!read_virtual(cr3, va, b))
      return std::nullopt;
    uint64_t v;
    std::memcpy(&v, b.data(), 8);
    return v;
  }

  bool read_virtual(uint64_t cr3, uint64_t va, std::span<std::byte> out) {
    for (size_t done = 0; done < out.size();) {
      auto t = walk(cr3, va + done);
      if (!t.ok)
        return false;
      auto n = std::min<size_t>(out.size() - done, drv::page_size - ((va + done) & drv::page_mask));
      if (auto err = session->read_physical(t.pa, out.subspan(done, n))) {
        ADD_FAILURE() << render(err);
        return false;
      }
      done += n;
    }
    return true;
  }

  /// A NUL-terminated string (ASCII, or UTF-16LE as UTF-8), one character at a time.
  std::optional<std::string> read_string(uint64_t cr3, uint64_t va, bool wide) {
    std::string out;
    for (unsigned k = 0; k < 256; ++k) {
      std::array<std::byte, 2> b{};
      if (!read_virtual(cr3, va + k * (wide ? 2 : 1), std::span(b).first(wide ? 2 : 1)))
        return std::nullopt;
      auto c = unsigned(b[0]) | (wide ? unsigned(b[1]) << 8 : 0);
      if (c == 0)
        return out;
      if (c < 0x80) {
        out += char(c);
      } else if (c < 0x800) {
        out += char(0xc0 | (c >> 6));
        out += char(0x80 | (c & 0x3f));
      } else {
        out += char(0xe0 | (c >> 12));
        out += char(0x80 | ((c >> 6) & 0x3f));
        out += char(0x80 | (c & 0x3f));
      }
    }
    ADD_FAILURE() << "no NUL";
    return std::nullopt;
  }

  static sim::domain_config recorded(drv::calling_convention abi, uint32_t vcpus = 2,
                                     uint32_t processes = 2) {
    auto cfg = small_domain(vcpus);
    cfg.abi = abi;
    cfg.processes = processes;
    cfg.record_calls = true;
    return cfg;
  }
};

TEST_F(sim_paging, rip_translates_to_the_instruction_in_every_process_through_2mib_pages) {
  boot(recorded(drv::calling_convention::sysv, 3, 3));
  auto& layout = dom->layout();
  ASSERT_EQ(layout.processes.size(), 3u);
  std::set<uint64_t> cr3s;
  for (auto& p : layout.processes)
    cr3s.insert(p.cr3);
  EXPECT_EQ(cr3s.size(), 3u) << "a PML4 each";
  for (auto& p : layout.processes) {
    for (auto& fn : dom->code().functions()) {
      auto t = walk(p.cr3, dom->layout().kernel.va_of(fn.entry_pa));
      ASSERT_TRUE(t.ok);
      EXPECT_EQ(t.pa, fn.entry_pa);
      EXPECT_EQ(t.page, uint64_t{1} << 21) << "the kernel's linear map has 2 MiB pages";
    }
    auto last = dom->info().max_gfn;
    auto t = walk(p.cr3, dom->layout().kernel.va_of(drv::pa_of(last, 0xff8)));
    ASSERT_TRUE(t.ok) << "all of RAM is mapped";
    EXPECT_EQ(t.pa, drv::pa_of(last, 0xff8));
    EXPECT_FALSE(walk(p.cr3, dom->layout().kernel.va_of(drv::pa_of(last + 1))).ok)
      << "and nothing beyond";
  }
  auto view = monitored_view();
  deny_execute_on_all_code(view);
  for (int i = 0; i < 50; ++i) {
    auto ev = next_event();
    EXPECT_EQ(ev.regs.cr3, layout.processes[dom->vcpu_process(ev.vcpu)].cr3)
      << "the cr3 of the process the VCPU runs now";
    auto t = walk(ev.regs.cr3, ev.regs.rip);
    ASSERT_TRUE(t.ok);
    EXPECT_EQ(t.pa, drv::pa_of(ev.mem.gfn, ev.mem.offset));
    fast_step(ev, view);
  }
}

TEST_F(sim_paging, an_odd_memory_size_ends_the_linear_map_in_4kib_pages) {
  auto cfg = small_domain();
  cfg.memory_mib = 9;
  boot(cfg);
  auto cr3 = dom->layout().processes[0].cr3;
  auto last = drv::pa_of(dom->info().max_gfn, 0x10);
  auto t = walk(cr3, dom->layout().kernel.va_of(last));
  ASSERT_TRUE(t.ok);
  EXPECT_EQ(t.pa, last);
  EXPECT_EQ(t.page, drv::page_size);
  t = walk(cr3, dom->layout().kernel.va_of(last - (uint64_t{1} << 20)));
  ASSERT_TRUE(t.ok);
  EXPECT_EQ(t.page, uint64_t{1} << 21);
  EXPECT_FALSE(walk(cr3, dom->layout().kernel.va_of(last + drv::page_size)).ok);
}

TEST_F(sim_paging, ram_beyond_2gib_is_outside_the_linear_map_and_reserved_pages_are_below_it) {
  auto cfg = small_domain();
  cfg.memory_mib = 4096;
  boot(cfg);
  auto& layout = dom->layout();
  EXPECT_EQ(layout.linear_bytes, uint64_t{2} << 30);
  EXPECT_EQ(layout.last_reserved_gfn, drv::gfn_of(uint64_t{2} << 30) - 1);
  auto t = walk(layout.processes[1].cr3, dom->layout().kernel.va_of((uint64_t{2} << 30) - 8));
  ASSERT_TRUE(t.ok);
  EXPECT_EQ(t.pa, (uint64_t{2} << 30) - 8);
  std::array<std::byte, 16> beyond{};
  beyond.fill(std::byte{1});
  ASSERT_FALSE(session->read_physical(drv::pa_of(dom->info().max_gfn), beyond));
  EXPECT_EQ(beyond[0], std::byte{0}) << "RAM nothing wrote reads as zeros";
}

TEST_F(sim_paging, reserved_pages_are_at_the_top_of_ram_and_clear_of_code_and_data) {
  boot(recorded(drv::calling_convention::sysv, 4, 2));
  auto& layout = dom->layout();
  EXPECT_EQ(layout.last_reserved_gfn, dom->info().max_gfn);
  EXPECT_GT(layout.first_reserved_gfn, dom->code().last_data_gfn());
  for (auto& p : layout.processes) {
    EXPECT_GE(drv::gfn_of(p.cr3), layout.first_reserved_gfn);
    EXPECT_LE(drv::gfn_of(p.cr3), layout.last_reserved_gfn);
  }
  for (auto& v : layout.vcpus) {
    for (auto g : v.stack_gfns)
      EXPECT_GE(g, layout.first_reserved_gfn);
    EXPECT_GE(v.kernel_strings_gfn, layout.first_reserved_gfn);
  }
}

TEST_F(sim_paging, the_user_stack_and_string_buffers_translate_through_4kib_pages) {
  boot(recorded(drv::calling_convention::sysv, 4, 2));
  auto& layout = dom->layout();
  for (drv::vcpu_id i = 0; i < 4; ++i) {
    auto& v = layout.vcpus[i];
    auto cr3 = layout.processes[v.process].cr3;
    EXPECT_EQ(v.process, i % 2);
    for (size_t k = 0; k < v.stack_gfns.size(); ++k) {
      auto t = walk(cr3, v.stack_low + k * drv::page_size + 0x10);
      ASSERT_TRUE(t.ok);
      EXPECT_EQ(t.page, drv::page_size);
      EXPECT_EQ(t.pa, drv::pa_of(v.stack_gfns[k], 0x10));
    }
    for (size_t k = 0; k < sim::string_pages; ++k) {
      auto t = walk(cr3, v.strings_va + k * drv::page_size);
      ASSERT_TRUE(t.ok);
      EXPECT_EQ(t.pa, drv::pa_of(v.string_gfns[k]));
    }
    EXPECT_FALSE(walk(cr3, v.stack_low - 8).ok) << "a guard page under the stack";
    EXPECT_FALSE(walk(cr3, v.stack_top).ok);
    // Every process maps it alike: each has a thread on each VCPU, and a VCPU that switches
    // processes keeps its stack.
    auto other = layout.processes[(v.process + 1) % 2].cr3;
    auto there = walk(other, v.stack_low);
    ASSERT_TRUE(there.ok);
    EXPECT_EQ(there.pa, drv::pa_of(v.stack_gfns[0]));
  }
  auto view = monitored_view();
  deny_execute_on_all_code(view);
  for (int i = 0; i < 40; ++i) {
    auto ev = next_event();
    auto& v = layout.vcpus[ev.vcpu];
    EXPECT_GE(ev.regs.rsp, v.stack_low);
    EXPECT_LT(ev.regs.rsp, v.stack_top);
    auto t = walk(ev.regs.cr3, ev.regs.rsp);
    ASSERT_TRUE(t.ok);
    EXPECT_EQ(t.page, drv::page_size) << "the user half has 4 KiB pages";
    fast_step(ev, view);
  }
}

TEST_F(sim_paging, the_not_present_page_reports_not_present_in_every_process) {
  boot(recorded(drv::calling_convention::sysv, 1, 3));
  for (auto& p : dom->layout().processes) {
    auto t = walk(p.cr3, p.unmapped_va + 0x123);
    EXPECT_FALSE(t.ok);
    EXPECT_EQ(t.level, 1u) << "the PTE itself is not present";
  }
}

TEST_F(sim_paging, too_little_memory_for_the_page_tables_is_a_clear_error) {
  auto cfg = small_domain(128);
  cfg.memory_mib = 2;
  auto made = hv->create_domain(cfg);
  ASSERT_FALSE(made);
  EXPECT_EQ(code_of(made.error()), ec::invalid_argument);
  EXPECT_NE(render(made.error()).find("page tables"), std::string::npos) << render(made.error());
  EXPECT_TRUE(sim::domain::validate(cfg));
  cfg.vcpus = 2;
  EXPECT_FALSE(sim::domain::validate(cfg)) << "2 VCPUs fit in 2 MiB";
  cfg = small_domain(4);
  cfg.memory_mib = 8;
  EXPECT_FALSE(sim::domain::validate(cfg)) << "8 MiB holds the defaults";
  cfg.processes = 0;
  EXPECT_TRUE(sim::domain::validate(cfg));
}

// At every trapped function entry, what the calling convention says is there is what the
// caller set up: registers, stack arguments, strings behind the page tables, [rsp].
class sim_calling_convention : public sim_paging,
                               public ::testing::WithParamInterface<drv::calling_convention> {};

TEST_P(sim_calling_convention, arguments_at_a_trapped_entry_are_what_the_caller_set_up) {
  auto abi = GetParam();
  auto cfg = recorded(abi, 2, 2);
  cfg.instructions_per_vcpu = 4000;
  boot(cfg);
  auto view = monitored_view();
  deny_execute_on_all_code(view);
  std::map<uint64_t, uint32_t> entries;  // entry pa -> function
  for (uint32_t f = 0; f < dom->code().functions().size(); ++f)
    entries[dom->code().functions()[f].entry_pa] = f;

  struct tracked {
    std::optional<uint32_t> previous;  // the instruction it trapped at before
    uint64_t previous_rsp = 0;
    std::vector<uint64_t> caller_rsp;    // at each open call
    std::map<uint64_t, size_t> entered;  // entry pa -> times trapped there
  };
  std::vector<tracked> vcpus(2);
  size_t checked = 0, strings = 0, unmapped = 0, kernel = 0, wide = 0, on_stack = 0, roots = 0;
  std::vector<drv::event> buf(8);
  for (;;) {
    size_t n = ring->take(buf);
    if (n == 0 && hv->run_pending(1) == 0)
      break;
    for (size_t e = 0; e < n; ++e) {
      auto& ev = buf[e];
      auto& me = vcpus[ev.vcpu];
      auto pa = dom->layout().kernel.pa_of(ev.regs.rip);
      auto index = dom->code().index_of(pa);
      ASSERT_TRUE(index);
      EXPECT_EQ((ev.regs.rsp + 8) % 16, 0u) << "rsp+8 is 16-aligned at every instruction";
      std::optional<sim::op> came_by;
      if (me.previous)
        came_by = dom->code().at(*me.previous).kind;
      if (came_by == sim::op::call)
        me.caller_rsp.push_back(me.previous_rsp);
      if (came_by == sim::op::ret && !entries.contains(pa)) {
        ASSERT_FALSE(me.caller_rsp.empty());
        EXPECT_EQ(ev.regs.rsp, me.caller_rsp.back()) << "ret leaves rsp as it was at the call";
        me.caller_rsp.pop_back();
      }
      if (auto f = entries.find(pa); f != entries.end()) {
        auto records = dom->calls(ev.vcpu, pa);
        auto nth = me.entered[pa]++;
        ASSERT_EQ(records.size(), nth + 1) << "logged when set up, once per entry";
        auto& rec = records.back();
        EXPECT_EQ(rec.arity, dom->layout().signatures[f->second].arity);
        // [rsp]: the instruction after the call, or 0 for a function the thread loop picked.
        uint64_t ret = 0;
        if (came_by == sim::op::call)
          ret = dom->layout().kernel.va_of(dom->code().at(*me.previous + 1).pa);
        else
          ++roots;
        EXPECT_EQ(read_virtual64(ev.regs.cr3, ev.regs.rsp), ret);
        for (unsigned i = 0; i < rec.arity; ++i) {
          auto at = drv::arg_at_entry(abi, i + 1);
          std::optional<uint64_t> value;
          if (at.reg) {
            value = ev.regs.*at.reg;
          } else {
            value = read_virtual64(ev.regs.cr3, ev.regs.rsp + at.stack_offset);
            ++on_stack;
          }
          ASSERT_EQ(value, rec.args[i]) << "argument " << i + 1;
          if (rec.kinds[i] == sim::arg_kind::integer)
            continue;
          ++strings;
          bool is_wide = rec.kinds[i] == sim::arg_kind::utf16;
          wide += is_wide;
          if (!rec.mapped[i]) {
            ++unmapped;
            auto t = walk(ev.regs.cr3, *value);
            EXPECT_FALSE(t.ok);
            EXPECT_EQ(t.level, 1u);
            EXPECT_TRUE(rec.text[i].empty());
            continue;
          }
          kernel += *value >= sim::kernel_base;
          auto text = read_string(ev.regs.cr3, *value, is_wide);
          ASSERT_TRUE(text) << "argument " << i + 1 << " at " << std::hex << *value;
          EXPECT_EQ(*text, rec.text[i]);
          EXPECT_GE(rec.text[i].size(), 1u);
        }
        ++checked;
      }
      me.previous = *index;
      me.previous_rsp = ev.regs.rsp;
      fast_step(ev, view);
    }
  }
  ASSERT_TRUE(dom->halted());
  EXPECT_GT(checked, 200u);
  EXPECT_GT(roots, 2u);
  EXPECT_GT(strings, 200u);
  EXPECT_GT(unmapped, 5u);
  EXPECT_GT(kernel, 20u);
  EXPECT_GT(wide, 50u);
  EXPECT_GT(on_stack, 50u);
  // Every entry trapped was logged, and nothing else was (but the entries set up last).
  for (drv::vcpu_id v = 0; v < 2; ++v)
    for (auto& [pa, times] : vcpus[v].entered)
      EXPECT_LE(dom->calls(v, pa).size(), times + 1);
}

INSTANTIATE_TEST_SUITE_P(abis, sim_calling_convention,
                         ::testing::Values(drv::calling_convention::sysv,
                                           drv::calling_convention::ms_x64),
                         [](const auto& info) {
                           return info.param == drv::calling_convention::sysv ? "sysv" : "ms_x64";
                         });

// Guest threads write stacks and strings while the monitor reads guest memory, that of paused
// VCPUs and that of running ones (ThreadSanitizer checks the store is free of data races).
TEST_F(sim_paging, a_paused_vcpu_s_arguments_read_while_other_vcpus_run_are_its_own) {
  // The fixture's members outlive the test's locals: the session goes before the host.
  hv = std::make_shared<sim::hypervisor>(
    sim::hypervisor_config{.threaded = true, .guest_threads = 2, .slice_instructions = 64});
  sim::sim_driver threaded_driver{hv};
  auto cfg = recorded(drv::calling_convention::ms_x64, 4, 2);
  cfg.instructions_per_vcpu = 3000;
  auto made = hv->create_domain(cfg);
  ASSERT_TRUE(made);
  dom = *made;
  auto attached = threaded_driver.attach(dom->id());
  ASSERT_TRUE(attached);
  session = std::move(*attached);
  auto view = monitored_view();
  auto& layout = dom->layout();
  std::vector<std::byte> reserved((layout.last_reserved_gfn - layout.first_reserved_gfn + 1) *
                                  drv::page_size);
  std::set<uint64_t> entries;
  for (auto& fn : dom->code().functions())
    entries.insert(fn.entry_pa);
  deny_execute_on_all_code(view);  // before the guest runs: it runs once events start
  auto started = session->start_events();
  ASSERT_TRUE(started);
  ring = *started;
  size_t checked = 0, events = 0;
  std::vector<drv::event> buf(8);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!dom->halted() && std::chrono::steady_clock::now() < deadline) {
    size_t n = ring->take(buf);
    for (size_t e = 0; e < n; ++e) {
      auto& ev = buf[e];
      auto pa = dom->layout().kernel.pa_of(ev.regs.rip);
      if (++events % 16 == 0) {  // racing the running VCPUs' writes
        ASSERT_FALSE(session->read_physical(drv::pa_of(layout.first_reserved_gfn), reserved));
      }
      if (entries.contains(pa)) {
        auto records = dom->calls(ev.vcpu, pa);
        ASSERT_FALSE(records.empty());
        auto& rec = records.back();
        for (unsigned i = 0; i < rec.arity; ++i) {
          auto at = drv::arg_at_entry(cfg.abi, i + 1);
          auto value = at.reg ? std::optional(ev.regs.*at.reg)
                              : read_virtual64(ev.regs.cr3, ev.regs.rsp + at.stack_offset);
          ASSERT_EQ(value, rec.args[i]);
          if (rec.kinds[i] != sim::arg_kind::integer && rec.mapped[i]) {
            EXPECT_EQ(read_string(ev.regs.cr3, *value, rec.kinds[i] == sim::arg_kind::utf16),
                      rec.text[i]);
          }
        }
        ++checked;
      }
      fast_step(ev, view);
    }
    if (n == 0)
      std::this_thread::yield();
  }
  EXPECT_TRUE(dom->halted());
  EXPECT_GT(checked, 100u);
}

// Without recording nothing is logged; the guest's memory is the same either way.
TEST_F(sim_paging, without_record_calls_nothing_is_logged_and_memory_is_the_same) {
  auto cfg = small_domain(1);
  boot(cfg);
  auto hv2 = std::make_shared<sim::hypervisor>(
    sim::hypervisor_config{.threaded = false, .slice_instructions = 64});
  cfg.record_calls = true;
  auto d2 = hv2->create_domain(cfg);
  ASSERT_TRUE(d2);
  sim::sim_driver driver2{hv2};
  auto s2 = driver2.attach((*d2)->id());
  ASSERT_TRUE(s2);
  ASSERT_TRUE((*s2)->start_events());
  EXPECT_EQ(hv->run_pending(20), 20u);
  EXPECT_EQ(hv2->run_pending(20), 20u);
  ASSERT_EQ(dom->instructions_retired(), (*d2)->instructions_retired());

  auto entry = [&](auto& d) { return d->code().functions()[0].entry_pa; };
  EXPECT_TRUE(dom->calls(0, entry(dom)).empty());
  size_t logged = 0;
  for (auto& fn : (*d2)->code().functions())
    logged += (*d2)->calls(0, fn.entry_pa).size();
  EXPECT_GT(logged, 10u);
  auto& layout = dom->layout();
  auto bytes = (layout.last_reserved_gfn - layout.first_reserved_gfn + 1) * drv::page_size;
  std::vector<std::byte> a(bytes), b(bytes);
  ASSERT_FALSE(session->read_physical(drv::pa_of(layout.first_reserved_gfn), a));
  ASSERT_FALSE((*s2)->read_physical(drv::pa_of(layout.first_reserved_gfn), b));
  EXPECT_TRUE(a == b);
}

}  // namespace
