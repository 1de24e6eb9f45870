// Sessions, requests out, responses in, pause and resume: the vm_event side of the domain.

#include "drivers/error.hpp"
#include "drivers/sim/hypervisor.hpp"

#include <algorithm>
#include <cstring>
#include <shared_mutex>
#include <thread>
#include <utility>

namespace vmitap::sim {

caf::error domain::check_session(uint64_t session, const char* call) const {
  if (state_ != drv::domain_state::running)
    return make_error(ec::domain_dead, std::string(call) + ": domain " + std::to_string(id_) +
                                         " (" + cfg_.name + ") is dead");
  if (session == 0 || session != session_.load())
    return make_error(ec::not_attached, std::string(call) + ": session " + std::to_string(session) +
                                          " is not attached to domain " + std::to_string(id_));
  return {};
}

caf::expected<uint64_t> domain::attach() {
  std::unique_lock xl{exec_};
  if (state_ != drv::domain_state::running)
    return make_error(ec::domain_dead, "attach: domain " + std::to_string(id_) + " is dead");
  if (session_.load() != 0)
    return make_error(ec::already_attached,
                      "attach: domain " + std::to_string(id_) + " is already monitored");
  session_ = ++last_session_;
  events_started_ = false;
  host_at_attach_ = views_[0].entries;
  leftover_view_changes_ = 0;
  views_left_ = 0;
  return session_.load();
}

void domain::answer_outstanding_locked() {
  for (auto& v : vcpus_) {
    if (v->outstanding.exchange(false))
      ++answered_by_detach_;
    if (v->state == run_state::waiting || v->state == run_state::stuck)
      v->state = run_state::runnable;  // an answer still on its way is dropped as stale
    v->singlestep = v->fast_singlestep = v->emulate_next = false;
    v->view = 0;
  }
  std::lock_guard g{orphan_mutex_};
  answered_by_detach_ += std::exchange(orphans_outstanding_, 0);
}

caf::error domain::detach(uint64_t session) {
  {
    std::unique_lock xl{exec_};
    if (session == 0 || session != session_.load())
      return {};  // already detached, or a newer session owns the domain now
    settle_locked();
    session_ = 0;
    wait_for_deliveries();
    sink_ = nullptr;
    events_started_ = false;
    pause_count_ = 0;  // the session's pauses end with it
    if (state_ != drv::domain_state::running)
      return {};
    answer_outstanding_locked();
    for (drv::view_id id = 1; id < drv::max_views; ++id) {
      auto& view = views_[id];
      if (!view.active || !view.created_by_session)
        continue;
      ++views_left_;
      for (auto& [gfn, acc] : view.entries)
        leftover_view_changes_ += acc != host_access(gfn);
      view = view_table{};
    }
  }
  wake_all_runnable();
  return {};
}

caf::error domain::start_events(uint64_t session, request_sink sink) {
  {
    std::unique_lock xl{exec_};
    if (auto err = check_session(session, "start_events"))
      return err;
    if (!sink)
      return make_error(ec::invalid_argument, "start_events: no sink");
    sink_ = std::move(sink);
    events_started_ = true;
  }
  wake_all_runnable();
  return {};
}

void domain::deliver(const drv::event& ev) {
  // sink_ changes only under exec_ exclusive, after wait_for_deliveries().
  sink_(ev);
  --deliveries_in_flight_;
}

void domain::wait_for_deliveries() const {
  while (deliveries_in_flight_.load() != 0)
    std::this_thread::yield();
}

void domain::wake(vcpu& v) {
  if (!v.queued.exchange(true))
    v.handle.owner->wake(&v.handle);
}

void domain::wake_all_runnable() {
  for (auto& v : vcpus_)
    wake(*v);  // run_slice sorts out who may run
}

caf::error domain::respond(uint64_t session, const drv::response& rsp) {
  if (rsp.vcpu >= vcpus_.size()) {
    std::shared_lock xl{exec_};
    if (state_ != drv::domain_state::running)
      return {};  // a dying domain answers every vm_event op with success, silently
    if (auto err = check_session(session, "respond"))
      return err;
    if (rsp.version != drv::interface_version) {
      ++responses_dropped_;
      return {};
    }
    std::lock_guard g{orphan_mutex_};
    if (orphans_outstanding_ == 0) {
      ++responses_rejected_;
      return make_error(ec::no_such_vcpu, "respond: no vcpu " + std::to_string(rsp.vcpu) +
                                            " in domain " + std::to_string(id_));
    }
    --orphans_outstanding_;
    ++requests_answered_;
    return {};
  }
  // The hot path: no lock. The answer is taken over by the VCPU's guest thread, which
  // applies it when the VCPU next runs, as hardware does at VM entry.
  if (state_ != drv::domain_state::running)
    return {};
  if (auto err = check_session(session, "respond"))
    return err;
  if (rsp.version != drv::interface_version) {
    ++responses_dropped_;  // Xen drops it; the VCPU stays paused
    return {};
  }
  auto& v = *vcpus_[rsp.vcpu];
  if (!v.outstanding.exchange(false)) {
    if (state_ != drv::domain_state::running)
      return {};  // death took the request first
    ++responses_rejected_;
    return make_error(ec::vcpu_not_paused, "respond: vcpu " + std::to_string(rsp.vcpu) +
                                             " of domain " + std::to_string(id_) +
                                             " waits for no response");
  }
  ++requests_answered_;  // this answer, and nothing else, takes the request
  auto latency = hv_.config().exit_latency;
  if (delayed_responses_.load(std::memory_order_relaxed) > 0) {
    std::lock_guard g{fault_mutex_};
    if (delayed_responses_ > 0) {
      --delayed_responses_;
      latency += response_delay_;
    }
  }
  auto now = sim_clock::now();
  v.response = rsp;
  v.answered_at = now;
  v.response_due = now + latency;
  v.response_session = session;
  v.has_response.store(true);
  wake(v);
  return {};
}

void domain::settle_locked() {
  for (auto& v : vcpus_)
    if (v->has_response.load(std::memory_order_acquire))
      apply_response(*v);
}

void domain::apply_response(vcpu& v) {
  v.has_response.store(false, std::memory_order_relaxed);
  const auto& rsp = v.response;
  if (v.response_session != session_.load() || v.state != run_state::waiting)
    return;  // a detach answered the request before this answer arrived
  v.response_latency.record(uint64_t((v.answered_at - v.raised_at).count()));
  if (!(rsp.flags & drv::flag::vcpu_paused)) {
    v.state = run_state::stuck;  // the sim acts only on responses that carry the pause flag
    return;
  }
  // As Xen's vm_event_emulate_check, before any view switch: EMULATE acts only on a
  // mem_access answer whose echoed access still violates the VCPU's current view.
  if ((rsp.flags & drv::flag::emulate) && rsp.reason == drv::event_reason::mem_access &&
      !allows(access_in(v.view, rsp.mem.gfn), rsp.mem.attempted))
    v.emulate_next = true;
  if ((rsp.flags & drv::flag::alternate_p2m) && valid_view(rsp.view))
    v.view = rsp.view;
  if (rsp.flags & drv::flag::toggle_singlestep)
    v.singlestep = !v.singlestep;
  if ((rsp.flags & drv::flag::fast_singlestep) && valid_view(rsp.fast_return_view)) {
    v.fast_singlestep = v.singlestep = true;
    v.fast_return_view = rsp.fast_return_view;
  }
  if (rsp.flags & drv::flag::set_registers)
    set_registers(v, rsp.regs);
  v.state = run_state::runnable;
  v.resume_at = v.response_due;
  v.measure_lateness = true;
}

void domain::set_registers(vcpu& v, const drv::registers& regs) {
  auto cr3 = v.regs.cr3;  // never written by a response, as on Xen
  v.regs = regs;
  v.regs.cr3 = cr3;
  auto pc = program_.index_of(layout_.kernel.pa_of(regs.rip));
  if (!pc || *pc == v.pc)
    return;
  if (v.arrived)
    ++v.redirected[{v.arrival_view, v.pc}];
  if (!v.stack.empty() && v.stack.back().return_pc == *pc) {
    // A return from the current call: the caller drops its argument area, as after its `ret`.
    auto f = v.stack.back();
    v.stack.pop_back();
    v.regs.rsp += f.bytes - 8;
    if (f.call != unrecorded) {
      v.calls[f.call].returned_early = true;
      v.calls[f.call].returned_rax = regs.rax;
    }
  }
  v.pc = *pc;
  v.arrived = false;
  recount_module_user(v);  // a return from the module's outermost call leaves it
}

caf::error domain::set_singlestep(uint64_t session, drv::vcpu_id id, bool on) {
  if (id >= vcpus_.size())
    return make_error(ec::no_such_vcpu, "set_singlestep: no vcpu " + std::to_string(id));
  auto& v = *vcpus_[id];
  std::lock_guard vl{v.mutex};
  std::shared_lock xl{exec_};
  if (auto err = check_session(session, "set_singlestep"))
    return err;
  if (v.has_response.load(std::memory_order_acquire))
    apply_response(v);
  v.singlestep = on;
  return {};
}

caf::error domain::read_physical(uint64_t session, uint64_t pa, std::span<std::byte> out) {
  std::shared_lock xl{exec_};
  if (auto err = check_session(session, "read_physical"))
    return err;
  auto last = pa + out.size() - (out.empty() ? 0 : 1);
  if (!ram(drv::gfn_of(pa)) || !ram(drv::gfn_of(last)) || last < pa)
    return make_error(ec::gfn_out_of_range, "read_physical: not guest RAM");
  // Page by page: what the sim wrote, code, or zeros (RAM nothing wrote).
  for (size_t done = 0; done < out.size();) {
    auto at = pa + done;
    auto chunk = out.subspan(
      done, std::min<size_t>(out.size() - done, drv::page_size - (at & drv::page_mask)));
    if (memory_.holds(drv::gfn_of(at))) {
      memory_.read(at, chunk);
    } else if (drv::gfn_of(at) == layout_.kernel.image_gfn) {
      std::memcpy(chunk.data(),
                  reinterpret_cast<const std::byte*>(image_page_.data()) + (at & drv::page_mask),
                  chunk.size());
    } else if (program_.is_code(drv::gfn_of(at))) {
      for (size_t i = 0; i < chunk.size(); ++i)
        chunk[i] = program_.code_byte(at + i);
    } else {
      std::fill(chunk.begin(), chunk.end(), std::byte{0});
    }
    done += chunk.size();
  }
  return {};
}

caf::expected<drv::registers> domain::vcpu_registers(uint64_t session, drv::vcpu_id id) {
  if (id >= vcpus_.size())
    return make_error(ec::no_such_vcpu, "vcpu_registers: VCPU " + std::to_string(id));
  auto& v = *vcpus_[id];
  std::lock_guard vl{v.mutex};  // as run_slice takes them: the VCPU's, then exec_
  std::shared_lock xl{exec_};
  if (auto err = check_session(session, "vcpu_registers"))
    return err;
  auto regs = v.regs;
  regs.rip = layout_.kernel.va_of(next_pa(v));
  if (user_mode_resumes_ > 0) {  // in_user_mode_until: what a VCPU in user code shows
    regs.cs.sel = 0x33;
    regs.ss.sel = 0x2b;
    regs.shadow_gs = std::exchange(regs.gs_base, 0);
  }
  return regs;
}

caf::error domain::pause(uint64_t session) {
  {
    std::unique_lock xl{exec_};
    if (auto err = check_session(session, "pause"))
      return err;
    ++pause_count_;
  }
  wait_for_deliveries();
  return {};
}

caf::error domain::resume(uint64_t session) {
  {
    std::unique_lock xl{exec_};
    if (auto err = check_session(session, "resume"))
      return err;
    if (user_mode_resumes_ > 0)
      --user_mode_resumes_;
    if (pause_count_ > 0 && --pause_count_ > 0)
      return {};
  }
  wake_all_runnable();
  return {};
}

void domain::die() {
  {
    std::unique_lock xl{exec_};
    state_ = drv::domain_state::dying;
    for (auto& v : vcpus_) {
      if (v->outstanding.exchange(false))
        ++dropped_by_death_;
      if (v->state != run_state::halted)
        ++halted_vcpus_;
      v->state = run_state::halted;  // nothing runs or is answered any more
    }
    std::lock_guard g{orphan_mutex_};
    dropped_by_death_ += std::exchange(orphans_outstanding_, 0);
  }
  wait_for_deliveries();
  state_ = drv::domain_state::dead;
}

}  // namespace vmitap::sim
