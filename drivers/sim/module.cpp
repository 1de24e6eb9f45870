// The loadable module (workload_config::module_functions): its code is mapped by PTEs of its
// own, and VCPU 0, between two of its top-level calls, pages it in and out by storing them
// one at a time, each store a guest write to the page table that its view may deny. VCPUs
// enter it only while it is loaded; the hardware's walk to its code sets each PTE's accessed
// bit, a write its view may deny too (Xen 4.17: MEM_ACCESS_FAULT_IN_GPT).
//
// The ordering a monitor relies on: a load makes the module callable only at the loader's
// next step after its last store retired, never at that retirement, and an unload makes it
// absent the same way. A monitor that holds VCPU 0 on the singlestep request after the last
// store can walk the new tables and arm (or disarm) before any VCPU runs module code (or
// before the ground truth checks that no module page is still watched).

#include "drivers/sim/domain.hpp"

namespace vmitap::sim {

namespace pte = drv::pte;
using drv::page_access;

uint32_t domain::pick_root(vcpu& v) {
  // Drawn again rather than skipped: the other functions keep their odds. Bounded, and
  // function 0 is never the module's.
  for (int draw = 0; draw < 16; ++draw) {
    auto f = program_.pick_root_function(v.random);
    if (!program_.is_module_function(f) || enter_module(v))
      return f;
  }
  return 0;
}

bool domain::enter_module(vcpu& v) {
  if (v.in_module)
    return true;  // a call inside it: counted already
  module_users_.fetch_add(1);
  if (module_state_.load() != module_state::loaded) {
    module_users_.fetch_sub(1);  // an unload began: back out, the call does nothing
    return false;
  }
  v.in_module = true;
  return true;
}

void domain::recount_module_user(vcpu& v) {
  bool inside = program_.in_module(v.pc);
  for (size_t i = 0; !inside && i < v.stack.size(); ++i)
    inside = program_.in_module(v.stack[i].return_pc);
  if (inside == v.in_module)
    return;
  // Only a monitor's SET_REGISTERS moves a VCPU in unchecked; it runs what it finds there.
  v.in_module = inside;
  if (inside)
    module_users_.fetch_add(1);
  else
    module_users_.fetch_sub(1);
}

void domain::leave_module(vcpu& v) {
  if (v.in_module) {
    v.in_module = false;
    module_users_.fetch_sub(1);
  }
}

bool domain::loader_boundary() {
  auto& l = loader_;
  if (l.phase == loader_phase::idle) {
    if (++l.calls < cfg_.module_interval)
      return false;
    l.calls = 0;
    if (module_state_.load() == module_state::absent) {
      l.phase = loader_phase::storing;
      l.loading = true;
      l.next = 0;
      return true;
    }
    module_state_.store(module_state::draining);  // no call enters from now on
    l.phase = loader_phase::draining;
  }
  if (l.phase == loader_phase::draining && module_users_.load() == 0) {
    l.phase = loader_phase::storing;  // nobody is in it, and nobody can enter any more
    l.loading = false;
    l.next = 0;
    return true;
  }
  return false;
}

std::optional<drv::event> domain::loader_store(vcpu& v) {
  auto& l = loader_;
  auto entry_pa = layout_.module_ptes[l.next];
  if (!v.emulate_next) {
    // Its fetch from the kernel image's page, then its write to the page table.
    auto rip = layout_.loader_store_pa;
    if (!allows(access_in(v.view, drv::gfn_of(rip)), page_access::x))
      return access_fault(v, rip, page_access::x, layout_.kernel.va_of(rip));
    if (!allows(access_in(v.view, drv::gfn_of(entry_pa)), page_access::w)) {
      ++l.truth.table_write_traps;
      return access_fault(v, entry_pa, page_access::w, layout_.kernel.va_of(entry_pa));
    }
  }
  v.emulate_next = false;
  // Present (or not) with the accessed bit clear: the first walk to the page sets it.
  auto frame = drv::pa_of(layout_.first_module_gfn + l.next);
  memory_.write64(entry_pa, frame | pte::writable | (l.loading ? pte::present : 0));
  ++l.truth.pte_stores;
  if (++l.next == layout_.module_ptes.size()) {
    l.phase = loader_phase::completing;
    start_root(v);  // what the singlestep request after the last store shows as rip
  }
  return after_retire(v);
}

void domain::complete_transition() {
  auto& l = loader_;
  l.phase = loader_phase::idle;
  if (l.loading) {
    module_state_.store(module_state::loaded);
    ++l.truth.loads;
    return;
  }
  module_state_.store(module_state::absent);
  ++l.truth.unloads;
  l.truth.pages_monitored_while_absent += monitored_module_pages();
}

uint64_t domain::monitored_module_pages() const {
  uint64_t n = 0;
  for (auto gfn = program_.first_module_gfn(); gfn <= program_.last_module_gfn(); ++gfn) {
    for (drv::view_id view = 0; view < drv::max_views; ++view) {
      if (!valid_view(view))
        continue;
      auto a = access_in(view, gfn);
      if (!allows(a, page_access::x) && a != cfg_.code_access) {
        ++n;
        break;
      }
    }
  }
  return n;
}

std::optional<drv::event> domain::walk_to_module_code(vcpu& v, const instruction& in) {
  auto entry_pa = layout_.module_pte_pa(drv::gfn_of(in.pa));
  auto entry = memory_.read64(entry_pa);
  if ((entry & pte::accessed) || !(entry & pte::present))
    return std::nullopt;  // nothing to write (not present: counted when it retires)
  if (!v.emulate_next && !allows(access_in(v.view, drv::gfn_of(entry_pa)), page_access::w)) {
    ++v.module_truth.accessed_bit_traps;
    auto ev = access_fault(v, entry_pa, page_access::w, layout_.kernel.va_of(in.pa));
    ev.mem.in_page_walk = true;
    return ev;
  }
  // Another VCPU's walk may set it meanwhile: the one that set it counts it.
  if (!(memory_.fetch_or64(entry_pa, pte::accessed) & pte::accessed))
    ++v.module_truth.accessed_bits_set;
  return std::nullopt;
}

void domain::count_module_instruction(vcpu& v, const instruction& in) {
  ++v.module_truth.module_instructions;
  auto entry = memory_.read64(layout_.module_pte_pa(drv::gfn_of(in.pa)));
  if (module_state_.load() == module_state::absent || !(entry & pte::present))
    ++v.module_truth.executed_while_absent;
}

sim::module_truth domain::module_truth() {
  std::unique_lock xl{exec_};
  auto sum = loader_.truth;
  for (auto& v : vcpus_) {
    const auto& t = v->module_truth;
    sum.accessed_bit_traps += t.accessed_bit_traps;
    sum.accessed_bits_set += t.accessed_bits_set;
    sum.executed_while_absent += t.executed_while_absent;
    sum.module_instructions += t.module_instructions;
  }
  return sum;
}

}  // namespace vmitap::sim
