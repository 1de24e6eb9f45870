// VCPUs running the workload: each instruction's fetch and data access checked against the
// VCPU's current view, requests raised where the view denies them.

#include "drivers/error.hpp"
#include "drivers/sim/hypervisor.hpp"

#include <shared_mutex>

namespace vmitap::sim {

using drv::page_access;

caf::expected<prepared_guest> prepare_guest(const domain_config& cfg) {
  if (cfg.vcpus == 0 || cfg.memory_mib == 0)
    return make_error(ec::invalid_argument, "needs vcpus and memory");
  if (cfg.workload.module_functions > 0 && cfg.module_interval == 0)
    return make_error(ec::invalid_argument, "sim guest: module_interval must be at least 1");
  auto max_gfn = cfg.memory_mib * (1024 * 1024 / drv::page_size) - 1;
  auto code = program::generate(cfg.workload, max_gfn);
  if (!code)
    return std::move(code.error());
  auto guest = build_guest(cfg, *code);
  if (!guest)
    return std::move(guest.error());
  return prepared_guest{std::move(*code), std::move(*guest)};
}

caf::error domain::validate(const domain_config& cfg) {
  auto made = prepare_guest(cfg);
  return made ? caf::error{} : std::move(made.error());
}

caf::expected<std::shared_ptr<domain>> domain::make(hypervisor& hv, drv::domain_id id,
                                                    domain_config cfg) {
  auto made = prepare_guest(cfg);
  if (!made)
    return make_error(ec::invalid_argument,
                      "sim domain " + cfg.name + ": " + context_of(made.error()));
  return std::make_shared<domain>(hv, id, std::move(cfg), std::move(made->code),
                                  std::move(made->guest));
}

domain::domain(hypervisor& hv, drv::domain_id id, domain_config cfg, program code,
               guest_image guest) :
  hv_(hv),
  id_(id),
  cfg_(std::move(cfg)),
  max_gfn_(cfg_.memory_mib * (1024 * 1024 / drv::page_size) - 1),
  program_(std::move(code)),
  layout_(std::move(guest.layout)),
  memory_(layout_.first_reserved_gfn, guest.pages),
  image_page_(guest.image_page),
  strings_(make_string_pool(cfg_.workload.seed)) {
  for (unsigned i = 0; i < max_args; ++i)
    arg_at_entry_[i] = drv::arg_at_entry(cfg_.abi, i + 1);
  views_[0].active = true;
  if (cfg_.code_access != page_access::rwx)
    for (auto gfn = program_.first_code_gfn(); gfn <= program_.last_code_gfn(); ++gfn)
      views_[0].entries[gfn] = cfg_.code_access;
  for (drv::vcpu_id i = 0; i < cfg_.vcpus; ++i) {
    auto v = std::make_unique<vcpu>();
    v->handle.dom = this;
    v->handle.id = i;
    v->random = rng{cfg_.workload.seed * 0x100000001b3ULL + i};
    v->arg_random = rng{(cfg_.workload.seed ^ 0xa9'9e7a'115eedULL) * 0x100000001b3ULL + i};
    v->home = &layout_.vcpus[i];
    v->stack.reserve(layout_.max_call_depth);  // calls allocate nothing
    // Long mode with paging (CR0.PG|WP|PE, CR4.PAE, EFER.LMA|LME|NXE|SCE), in its process.
    v->regs.cr0 = 0x8001'0001;
    v->regs.cr4 = 0x20;
    v->regs.msr_efer = 0xd01;
    v->regs.rflags = 0x2;
    v->process = v->home->process;
    v->sched_random = rng{(cfg_.workload.seed ^ 0x5c4e'd01e'5eedULL) * 0x100000001b3ULL + i};
    v->regs.cr3 = layout_.processes[v->process].cr3;
    // In the kernel (CS and SS are the kernel's 64-bit selectors), its per-CPU area or KPCR
    // in gs_base, the syscall entry in MSR_LSTAR.
    v->regs.cs = {0xfffff, 0xa9b, 0x10};
    v->regs.ss = {0xfffff, 0xc93, 0x18};
    v->regs.gs_base = layout_.kernel.va_of(drv::pa_of(v->home->percpu_gfn));
    auto entry = program_.functions()[layout_.kernel.syscall_entry].entry_pa;
    v->regs.msr_lstar = layout_.kernel.va_of(entry);
    start_root(*v);  // its thread's start routine called nothing yet
    v->executions.resize(drv::max_views);
    vcpus_.push_back(std::move(v));
  }
}

void domain::bind(const std::function<runner*(drv::vcpu_id)>& runner_of) {
  for (auto& v : vcpus_)
    v->handle.owner = runner_of(v->handle.id);
}

drv::domain_info domain::info() const {
  return {id_, cfg_.name, cfg_.vcpus, state_.load(), max_gfn_};
}

drv::event domain::make_event(const vcpu& v, drv::event_reason reason) const {
  drv::event ev;
  ev.reason = reason;
  ev.vcpu = v.handle.id;
  ev.view = v.view;
  ev.regs = v.regs;
  ev.regs.rip = layout_.kernel.va_of(next_pa(v));
  return ev;
}

drv::event domain::access_fault(const vcpu& v, uint64_t pa, page_access attempted,
                                uint64_t gla) const {
  auto ev = make_event(v, drv::event_reason::mem_access);
  ev.mem = {drv::gfn_of(pa), pa & drv::page_mask, gla, attempted, true};
  return ev;
}

void domain::start_root(vcpu& v) {
  auto root = pick_root(v);
  v.pc = program_.functions()[root].first;
  v.regs.rsp = v.home->stack_top - 8;
  enter(v, root, 0);
}

void domain::retire(vcpu& v, const instruction& in) {
  auto& counts = v.executions[v.arrival_view];
  if (counts.empty())
    counts.resize(program_.size());
  ++counts[v.pc];
  ++v.retired;
  v.arrived = false;
  if (program_.in_module(v.pc))
    count_module_instruction(v, in);
  switch (in.kind) {
    case op::call: {
      if (program_.is_module_function(in.target) && !enter_module(v)) {
        ++v.pc;  // the module is out: the call does nothing, as a plain instruction
        break;
      }
      auto bytes = enter(v, in.target, layout_.kernel.va_of(program_.at(v.pc + 1).pa));
      v.stack.push_back(
        {v.pc + 1, bytes, cfg_.record_calls ? uint32_t(v.calls.size() - 1) : unrecorded});
      v.pc = program_.functions()[in.target].first;
      break;
    }
    case op::ret:
      if (v.stack.empty()) {
        // The outermost return: the thread's loop calls its next function, from the stack's
        // top, with no return address. On VCPU 0 the module loader may run first.
        schedule(v);
        leave_module(v);
        if (v.handle.id != 0 || !program_.has_module() || !loader_boundary())
          start_root(v);
      } else {
        // ret pops the return address, the caller drops its argument area.
        v.pc = v.stack.back().return_pc;
        v.regs.rsp += v.stack.back().bytes;
        v.stack.pop_back();
        if (v.in_module)
          recount_module_user(v);
      }
      break;
    case op::branch:
      v.pc = v.random.chance(0.5) ? in.target : v.pc + 1;
      break;
    default:
      ++v.pc;
  }
}

void domain::schedule(vcpu& v) {
  if (cfg_.processes < 2 || !v.sched_random.chance(0.25))
    return;
  auto next = uint32_t(v.sched_random.below(cfg_.processes));
  if (next == v.process)
    return;
  v.process = next;
  v.regs.cr3 = layout_.processes[next].cr3;
  auto thread = layout_.kernel.va_of(drv::pa_of(layout_.thread_gfns[next][v.handle.id]));
  auto current = layout_.kernel.os == drv::kernel_os::windows_kernel
                   ? layout_of::kpcr_prcb + layout_of::kprcb_current_thread
                   : layout_of::current_task;
  memory_.write64(drv::pa_of(v.home->percpu_gfn, current), thread);
}

std::optional<drv::event> domain::step(vcpu& v) {
  if (v.malformed) {
    auto ev = make_event(v, drv::event_reason::mem_access);
    if (*v.malformed == malformed_kind::bad_version)
      ev.version = drv::interface_version - 1;
    else
      ev.reason = drv::event_reason(0x7f);
    v.malformed.reset();
    return ev;
  }
  if (v.handle.id == 0 && loader_.phase == loader_phase::completing)
    complete_transition();
  if (cfg_.instructions_per_vcpu != 0 && v.retired >= cfg_.instructions_per_vcpu) {
    v.state = run_state::halted;
    ++halted_vcpus_;
    return std::nullopt;
  }
  if (v.handle.id == 0 && loader_.phase == loader_phase::storing)
    return loader_store(v);
  const auto& in = program_.at(v.pc);
  if (!v.arrived) {
    v.arrived = true;
    v.arrival_view = v.view;
  }
  if (program_.in_module(v.pc))
    if (auto ev = walk_to_module_code(v, in))
      return ev;
  if (!v.emulate_next) {
    auto fault = [&](uint64_t pa, page_access attempted) {
      return access_fault(v, pa, attempted, layout_.kernel.va_of(pa));
    };
    if (!allows(access_in(v.view, drv::gfn_of(in.pa)), page_access::x))
      return fault(in.pa, page_access::x);
    if (in.kind == op::load && !allows(access_in(v.view, drv::gfn_of(in.data_pa)), page_access::r))
      return fault(in.data_pa, page_access::r);
    if (in.kind == op::store && !allows(access_in(v.view, drv::gfn_of(in.data_pa)), page_access::w))
      return fault(in.data_pa, page_access::w);
  }
  v.emulate_next = false;  // EMULATE: this one instruction ran without the EPT check
  retire(v, in);
  return after_retire(v);
}

std::optional<drv::event> domain::after_retire(vcpu& v) {
  if (v.fast_singlestep) {
    if (valid_view(v.fast_return_view))  // Xen skips a switch to a destroyed view
      v.view = v.fast_return_view;
    v.fast_singlestep = v.singlestep = false;
    return std::nullopt;
  }
  if (v.singlestep) {
    auto ev = make_event(v, drv::event_reason::singlestep);
    ev.mem.gfn = drv::gfn_of(next_pa(v));
    return ev;
  }
  return std::nullopt;
}

slice_result domain::run_slice(drv::vcpu_id id) {
  auto& v = *vcpus_[id];
  std::optional<drv::event> ev;
  slice_result result;
  {
    std::lock_guard vl{v.mutex};
    std::shared_lock xl{exec_};
    if (v.has_response.load(std::memory_order_acquire))
      apply_response(v);  // as hardware does at the VCPU's next entry
    if (v.state == run_state::runnable && pause_count_ == 0 && events_started_ &&
        state_ == drv::domain_state::running) {
      auto now = sim_clock::now();
      if (now < v.resume_at)
        return {slice_result::not_due, v.resume_at};  // the guest thread keeps it, timed
      if (v.measure_lateness) {
        v.lateness.record(uint64_t((now - v.resume_at).count()));
        v.measure_lateness = false;
      }
      for (uint32_t n = 0; n < hv_.config().slice_instructions; ++n)
        if ((ev = step(v)) || v.state != run_state::runnable)
          break;
      if (!ev && v.state == run_state::runnable)
        return {slice_result::yielded, {}};  // the guest thread queues it again at once
      if (ev) {
        v.state = run_state::waiting;
        v.raised_at = sim_clock::now();
        ++requests_raised_;
        ++deliveries_in_flight_;  // before exec_ is released: pause() waits for it
      }
    }
    // It leaves its guest thread until someone wakes it. Cleared before the request is
    // visible, and checked once more: a response that came meanwhile is not lost.
    v.queued.store(false);
    if (ev)
      v.outstanding.store(true);
    else if (v.has_response.load() && !v.queued.exchange(true))
      result.kind = slice_result::yielded;
  }
  if (ev)
    deliver(*ev);
  return result;
}

}  // namespace vmitap::sim
