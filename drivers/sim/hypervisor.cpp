#include "drivers/sim/hypervisor.hpp"

#include "engine/error.hpp"

#include <cerrno>
#include <shared_mutex>

namespace vmitap::sim {

using namespace std::chrono;
using drv::page_access;

namespace {
// Set while a handler runs on this thread: a response given from inside a handler must not
// run the VCPU inline, or a synchronous responder would recurse once per event.
thread_local bool in_handler = false;
}  // namespace

exec_lock::exec_lock() {
  pthread_rwlockattr_t attr;
  pthread_rwlockattr_init(&attr);
  pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init(&lock_, &attr);
  pthread_rwlockattr_destroy(&attr);
}

exec_lock::~exec_lock() {
  pthread_rwlock_destroy(&lock_);
}

// --- domain ---------------------------------------------------------------------------------

domain::domain(hypervisor& hv, drv::domain_id id, domain_config cfg)
  : hv_(hv), id_(id), cfg_(std::move(cfg)),
    max_gfn_(cfg_.memory_mib * (1024 * 1024 / drv::page_size) - 1),
    program_(program::generate(cfg_.workload, max_gfn_)) {
  views_[0].active = true;
  if (cfg_.code_access != page_access::rwx)
    for (auto gfn = program_.first_code_gfn(); gfn <= program_.last_code_gfn(); ++gfn)
      views_[0].entries[gfn] = cfg_.code_access;
  for (drv::vcpu_id i = 0; i < cfg_.vcpus; ++i) {
    auto v = std::make_unique<vcpu>();
    v->id = i;
    v->random = rng{cfg_.workload.seed * 0x100000001b3ULL + i};
    v->pc = program_.pick_root(v->random);
    v->regs.cr3 = 0x1000 * (uint64_t{i} + 1);
    v->regs.rsp = kernel_base + 0x7ff000 - 0x10000 * i;
    v->executions.resize(max_views);
    vcpus_.push_back(std::move(v));
  }
}

drv::domain_info domain::info() const {
  return {id_, cfg_.name, cfg_.vcpus, state_.load(), max_gfn_};
}

caf::error domain::check_alive(const char* call) const {
  if (state_ != drv::domain_state::running)
    return make_driver_error(call, ESRCH);
  return {};
}

page_access domain::host_access(drv::gfn_t gfn) const {
  auto i = views_[0].entries.find(gfn);
  return i == views_[0].entries.end() ? page_access::rwx : i->second;
}

page_access domain::access_in(drv::view_id view, drv::gfn_t gfn) const {
  if (view != 0) {
    // Xen 4.17 copies host-p2m entries into a view lazily, with the host's access.
    auto i = views_[view].entries.find(gfn);
    if (i != views_[view].entries.end())
      return i->second;
  }
  return host_access(gfn);
}

caf::error domain::attach() {
  std::unique_lock xl{exec_};
  if (auto err = check_alive("xc_monitor_enable"))
    return err;
  if (attached_)
    return make_error(ec::already_attached,
                      "xc_monitor_enable: domain " + std::to_string(id_) + " is already monitored");
  attached_ = true;
  events_started_ = false;
  host_at_attach_ = views_[0].entries;
  leftover_view_changes_ = 0;
  return {};
}

void domain::answer_outstanding_locked() {
  for (auto& v : vcpus_) {
    if (v->state == run_state::waiting)
      ++answered_by_detach_;
    if (v->state == run_state::waiting || v->state == run_state::stuck)
      v->state = run_state::runnable;
    v->singlestep = v->fast_singlestep = v->emulate_next = false;
    v->view = 0;
  }
  std::lock_guard g{orphan_mutex_};
  answered_by_detach_ += orphans_outstanding_;
  orphans_outstanding_ = 0;
}

caf::error domain::detach() {
  {
    std::unique_lock xl{exec_};
    if (!attached_)
      return {};
    attached_ = false;
    wait_for_deliveries();
    if (state_ == drv::domain_state::running) {
      answer_outstanding_locked();
      for (drv::view_id id = 1; id < max_views; ++id) {
        auto& view = views_[id];
        if (!view.active || !view.created_by_session)
          continue;
        for (auto& [gfn, acc] : view.entries)
          leftover_view_changes_ += acc != host_access(gfn);
        view = view_table{};
      }
      pause_count_ = 0;
    }
    handlers_ = {};
    events_started_ = false;
  }
  requeue_runnable();
  return {};
}

caf::expected<drv::view_id> domain::create_view(page_access default_access) {
  std::unique_lock xl{exec_};
  if (auto err = check_alive("xc_altp2m_create_view"))
    return err;
  for (drv::view_id id = 1; id < max_views; ++id) {
    if (!views_[id].active) {
      views_[id] = view_table{true, attached_, default_access, {}};
      return id;
    }
  }
  return make_driver_error("xc_altp2m_create_view", ENOSPC);
}

caf::error domain::destroy_view(drv::view_id id) {
  std::unique_lock xl{exec_};
  if (auto err = check_alive("xc_altp2m_destroy_view"))
    return err;
  if (id == 0)
    return make_error(ec::invalid_argument, "xc_altp2m_destroy_view: view 0 cannot be destroyed");
  if (id >= max_views || !views_[id].active)
    return make_error(ec::no_such_view, "xc_altp2m_destroy_view: no view " + std::to_string(id));
  for (auto& v : vcpus_)
    if (v->view == id)  // as Xen counts it: a pending fast-singlestep return does not
      return make_error(ec::view_in_use, "xc_altp2m_destroy_view: view " + std::to_string(id)
                                           + " is in use by vcpu " + std::to_string(v->id)
                                           + " (errno " + std::to_string(EBUSY) + ")");
  for (auto& [gfn, acc] : views_[id].entries)
    leftover_view_changes_ += acc != host_access(gfn);
  views_[id] = view_table{};
  return {};
}

caf::error domain::switch_all(drv::view_id id) {
  std::unique_lock xl{exec_};
  if (auto err = check_alive("xc_altp2m_switch_to_view"))
    return err;
  if (id >= max_views || !views_[id].active)
    return make_error(ec::no_such_view, "xc_altp2m_switch_to_view: no view " + std::to_string(id));
  for (auto& v : vcpus_)
    v->view = id;
  return {};
}

caf::expected<page_access> domain::get_access(drv::view_id id, drv::gfn_t gfn) {
  std::shared_lock xl{exec_};
  if (auto err = check_alive("xc_altp2m_get_mem_access"))
    return err;
  if (id >= max_views || !views_[id].active)
    return make_error(ec::no_such_view, "xc_altp2m_get_mem_access: no view " + std::to_string(id));
  if (!ram(gfn))
    return make_error(ec::gfn_out_of_range, "xc_altp2m_get_mem_access: gfn "
                                              + std::to_string(gfn) + " is not guest RAM");
  return access_in(id, gfn);
}

caf::error domain::set_access(drv::view_id id, std::span<const drv::access_change> changes) {
  std::unique_lock xl{exec_};
  if (auto err = check_alive("xc_altp2m_set_mem_access_multi"))
    return err;
  if (id >= max_views || !views_[id].active)
    return make_error(ec::no_such_view,
                      "xc_altp2m_set_mem_access_multi: no view " + std::to_string(id));
  size_t count = changes.size();
  int failure = 0;
  {
    std::lock_guard g{fault_mutex_};
    if (failing_calls_ > 0) {
      --failing_calls_;
      count = std::min(count, failing_applied_);
      failure = failing_errno_;
    }
  }
  for (size_t i = 0; i < count; ++i) {
    auto [gfn, value] = changes[i];
    if (!ram(gfn))
      continue;  // Xen: succeeds and does nothing on a non-RAM gfn
    views_[id].entries[gfn] = value;
    if (id == 0)  // host-p2m writes propagate into every view holding a copy
      for (drv::view_id other = 1; other < max_views; ++other)
        if (auto e = views_[other].entries.find(gfn); e != views_[other].entries.end())
          e->second = value;
  }
  if (failure != 0)
    return make_driver_error("xc_altp2m_set_mem_access_multi", failure);
  return {};
}

caf::error domain::start_events(drv::event_handlers handlers) {
  std::vector<drv::event> held;
  {
    std::unique_lock xl{exec_};
    if (auto err = check_alive("xc_monitor_enable"))
      return err;
    if (!attached_)
      return make_error(ec::not_attached, "start_events: domain is not attached");
    if (handlers.per_vcpu.size() != vcpus_.size() || !handlers.orphan)
      return make_error(ec::invalid_argument, "start_events: need one handler per vcpu and "
                                              "an orphan handler");
    handlers_ = std::move(handlers);
    events_started_ = true;
  }
  requeue_runnable();
  return {};
}

drv::event domain::make_event(const vcpu& v, drv::event_reason reason) const {
  drv::event ev;
  ev.reason = reason;
  ev.vcpu = v.id;
  ev.view = v.view;
  ev.regs = v.regs;
  ev.regs.rip = gva_of(program_.at(v.pc).pa);
  return ev;
}

void domain::retire(vcpu& v, const instruction& in) {
  auto& counts = v.executions[v.arrival_view];
  if (counts.empty())
    counts.resize(program_.size());
  ++counts[v.pc];
  ++v.retired;
  v.arrived = false;
  switch (in.kind) {
    case op::call:
      v.stack.push_back(v.pc + 1);
      v.pc = program_.functions()[in.target].first;
      v.regs.rsp -= 8;
      break;
    case op::ret:
      if (v.stack.empty()) {
        v.pc = program_.pick_root(v.random);
      } else {
        v.pc = v.stack.back();
        v.stack.pop_back();
        v.regs.rsp += 8;
      }
      break;
    case op::branch:
      v.pc = v.random.chance(0.5) ? in.target : v.pc + 1;
      break;
    default:
      ++v.pc;
  }
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
  if (cfg_.instructions_per_vcpu != 0 && v.retired >= cfg_.instructions_per_vcpu) {
    v.state = run_state::halted;
    return std::nullopt;
  }
  const auto& in = program_.at(v.pc);
  if (!v.arrived) {
    v.arrived = true;
    v.arrival_view = v.view;
  }
  if (!v.emulate_next) {
    auto fault = [&](uint64_t pa, page_access attempted) {
      auto ev = make_event(v, drv::event_reason::mem_access);
      ev.mem = {drv::gfn_of(pa), pa & drv::page_mask, gva_of(pa), attempted};
      return ev;
    };
    if (!allows(access_in(v.view, drv::gfn_of(in.pa)), page_access::x))
      return fault(in.pa, page_access::x);
    if (in.kind == op::load && !allows(access_in(v.view, drv::gfn_of(in.data_pa)), page_access::r))
      return fault(in.data_pa, page_access::r);
    if (in.kind == op::store && !allows(access_in(v.view, drv::gfn_of(in.data_pa)), page_access::w))
      return fault(in.data_pa, page_access::w);
  }
  v.emulate_next = false;
  retire(v, in);
  if (v.fast_singlestep) {
    if (views_[v.fast_return_view].active)  // Xen skips a switch to a destroyed view
      v.view = v.fast_return_view;
    v.fast_singlestep = v.singlestep = false;
    return std::nullopt;
  }
  if (v.singlestep) {
    auto ev = make_event(v, drv::event_reason::singlestep);
    ev.mem.gfn = drv::gfn_of(program_.at(v.pc).pa);
    return ev;
  }
  return std::nullopt;
}

void domain::run_slice(drv::vcpu_id id) {
  auto& v = *vcpus_[id];
  v.queued = false;
  std::optional<drv::event> ev;
  bool again = false;
  steady_clock::time_point wake{};
  {
    std::lock_guard vl{v.mutex};
    std::shared_lock xl{exec_};
    if (v.state != run_state::runnable || pause_count_ > 0 || !events_started_
        || state_ != drv::domain_state::running)
      return;  // resume(), start_events() or a response queue it again
    if (auto now = steady_clock::now(); now < v.resume_at) {
      wake = v.resume_at;
    } else {
      for (uint32_t n = 0; n < hv_.config().slice_instructions; ++n)
        if ((ev = step(v)) || v.state != run_state::runnable)
          break;
      if (ev) {
        v.state = run_state::waiting;
        ++requests_raised_;
        ++deliveries_in_flight_;  // before exec_ is released: pause() waits for it
      }
      again = !ev && v.state == run_state::runnable;
    }
  }
  if (ev)
    deliver(*ev, false);
  else if (wake != steady_clock::time_point{})
    hv_.enqueue(shared_from_this(), id, wake);
  else if (again && !v.queued.exchange(true))
    hv_.enqueue(shared_from_this(), id);
}

void domain::deliver(const drv::event& ev, bool orphan) {
  // handlers_ change only under exec_ exclusive after wait_for_deliveries().
  in_handler = true;
  if (orphan)
    handlers_.orphan(ev);
  else
    handlers_.per_vcpu[ev.vcpu](ev);
  in_handler = false;
  --deliveries_in_flight_;
}

void domain::wait_for_deliveries() {
  while (deliveries_in_flight_.load() != 0)
    std::this_thread::yield();
}

void domain::requeue_runnable() {
  auto self = shared_from_this();
  for (auto& v : vcpus_)
    if (!v->queued.exchange(true))
      hv_.enqueue(self, v->id);
}

caf::error domain::respond(const drv::response& rsp) {
  if (state_ != drv::domain_state::running)
    return {};  // a dying domain answers every vm_event op with success, silently
  if (rsp.version != drv::interface_version) {
    ++responses_dropped_;  // Xen drops it; the VCPU stays paused
    return {};
  }
  if (rsp.vcpu >= vcpus_.size()) {
    std::lock_guard g{orphan_mutex_};
    if (orphans_outstanding_ == 0) {
      ++responses_rejected_;
      return make_error(ec::no_such_vcpu, "response for vcpu " + std::to_string(rsp.vcpu)
                                            + " of domain " + std::to_string(id_));
    }
    --orphans_outstanding_;
    ++requests_answered_;
    return {};
  }
  auto delay = hv_.config().exit_latency;
  {
    std::lock_guard g{fault_mutex_};
    if (delayed_responses_ > 0) {
      --delayed_responses_;
      delay += response_delay_;
    }
  }
  auto& v = *vcpus_[rsp.vcpu];
  {
    std::lock_guard vl{v.mutex};
    std::shared_lock xl{exec_};
    if (v.state != run_state::waiting) {
      ++responses_rejected_;
      return make_error(ec::vcpu_not_paused, "vcpu " + std::to_string(rsp.vcpu) + " of domain "
                                               + std::to_string(id_) + " waits for no response");
    }
    ++requests_answered_;
    if (!(rsp.flags & drv::flag::vcpu_paused)) {
      v.state = run_state::stuck;  // Xen acts only on responses that carry the pause flag
      return {};
    }
    auto valid_view = [&](drv::view_id id) { return id < max_views && views_[id].active; };
    if ((rsp.flags & drv::flag::alternate_p2m) && valid_view(rsp.view))
      v.view = rsp.view;
    if (rsp.flags & drv::flag::toggle_singlestep)
      v.singlestep = !v.singlestep;
    if ((rsp.flags & drv::flag::fast_singlestep) && valid_view(rsp.fast_return_view)) {
      v.fast_singlestep = v.singlestep = true;
      v.fast_return_view = rsp.fast_return_view;
    }
    if (rsp.flags & drv::flag::emulate)
      v.emulate_next = true;
    if (rsp.flags & drv::flag::set_registers) {
      if (auto pc = program_.index_of(rsp.regs.rip - kernel_base)) {
        v.pc = *pc;
        v.arrived = false;
      }
      auto rip = v.regs.rip;
      v.regs = rsp.regs;
      v.regs.rip = rip;
    }
    v.state = run_state::runnable;
    v.resume_at = delay.count() > 0 ? steady_clock::now() + delay : steady_clock::time_point{};
  }
  if (delay.count() > 0)
    hv_.enqueue(shared_from_this(), rsp.vcpu, v.resume_at);
  else if (in_handler)
    hv_.enqueue(shared_from_this(), rsp.vcpu);
  else
    run_slice(rsp.vcpu);
  return {};
}

caf::error domain::read_physical(uint64_t pa, std::span<std::byte> out) {
  auto last = pa + out.size() - (out.empty() ? 0 : 1);
  if (!ram(drv::gfn_of(pa)) || !ram(drv::gfn_of(last)) || last < pa)
    return make_driver_error("xc_map_foreign_range", EFAULT);
  for (size_t i = 0; i < out.size(); ++i)
    out[i] = program_.is_code(drv::gfn_of(pa + i)) ? program_.code_byte(pa + i) : std::byte{0};
  return {};
}

caf::error domain::pause() {
  {
    std::unique_lock xl{exec_};
    if (auto err = check_alive("xc_domain_pause"))
      return err;
    ++pause_count_;
  }
  wait_for_deliveries();
  return {};
}

caf::error domain::resume() {
  {
    std::unique_lock xl{exec_};
    if (auto err = check_alive("xc_domain_unpause"))
      return err;
    if (pause_count_ > 0 && --pause_count_ > 0)
      return {};
  }
  requeue_runnable();
  return {};
}

uint64_t domain::executions(uint64_t pa, drv::view_id view) {
  auto index = program_.index_of(pa);
  if (!index || view >= max_views)
    return 0;
  std::unique_lock xl{exec_};
  uint64_t sum = 0;
  for (auto& v : vcpus_)
    if (!v->executions[view].empty())
      sum += v->executions[view][*index];
  return sum;
}

uint64_t domain::reached(uint64_t pa, drv::view_id view) {
  auto index = program_.index_of(pa);
  if (!index || view >= max_views)
    return 0;
  std::unique_lock xl{exec_};
  uint64_t n = 0;
  for (auto& v : vcpus_) {
    if (!v->executions[view].empty())
      n += v->executions[view][*index];
    n += v->arrived && v->pc == *index && v->arrival_view == view;
  }
  return n;
}

std::map<std::pair<uint64_t, drv::view_id>, uint64_t> domain::all_executions() {
  std::map<std::pair<uint64_t, drv::view_id>, uint64_t> out;
  std::unique_lock xl{exec_};
  for (auto& v : vcpus_)
    for (drv::view_id view = 0; view < max_views; ++view)
      for (size_t i = 0; i < v->executions[view].size(); ++i)
        if (auto n = v->executions[view][i])
          out[{program_.at(uint32_t(i)).pa, view}] += n;
  return out;
}

uint64_t domain::instructions_retired() {
  std::unique_lock xl{exec_};
  uint64_t sum = 0;
  for (auto& v : vcpus_)
    sum += v->retired;
  return sum;
}

uint64_t domain::vcpu_retired(drv::vcpu_id id) {
  std::unique_lock xl{exec_};
  return vcpus_.at(id)->retired;
}

invariants domain::check() {
  std::unique_lock xl{exec_};
  invariants inv;
  inv.requests_raised = requests_raised_;
  inv.requests_answered = requests_answered_;
  inv.answered_by_detach = answered_by_detach_;
  inv.responses_rejected = responses_rejected_;
  inv.responses_dropped = responses_dropped_;
  inv.pages_changed = leftover_view_changes_;
  inv.dropped_by_death = dropped_by_death_;
  if (state_ != drv::domain_state::running)
    return inv;  // a dead domain has no VCPUs and no p2m; its requests died with it
  {
    std::lock_guard g{orphan_mutex_};
    inv.unanswered = orphans_outstanding_;
  }
  for (auto& v : vcpus_) {
    inv.unanswered += v->state == run_state::waiting;
    inv.paused_vcpus += pause_count_ > 0 || v->state == run_state::waiting
                        || v->state == run_state::stuck;
  }
  auto differs = [&](drv::gfn_t gfn) {
    auto before = host_at_attach_.find(gfn);
    return host_access(gfn) != (before == host_at_attach_.end() ? page_access::rwx : before->second);
  };
  for (auto& [gfn, acc] : views_[0].entries)
    inv.pages_changed += differs(gfn);
  for (auto& [gfn, acc] : host_at_attach_)
    inv.pages_changed += !views_[0].entries.contains(gfn) && differs(gfn);
  return inv;
}

drv::view_id domain::vcpu_view(drv::vcpu_id id) {
  std::unique_lock xl{exec_};
  return vcpus_.at(id)->view;
}

bool domain::vcpu_singlestepping(drv::vcpu_id id) {
  std::unique_lock xl{exec_};
  return vcpus_.at(id)->singlestep;
}

bool domain::halted() {
  std::unique_lock xl{exec_};
  for (auto& v : vcpus_)
    if (v->state != run_state::halted)
      return false;
  return true;
}

void domain::fail_access_changes(uint32_t calls, size_t applied, int err) {
  std::lock_guard g{fault_mutex_};
  failing_calls_ = calls;
  failing_applied_ = applied;
  failing_errno_ = err;
}

void domain::delay_responses(uint32_t count, nanoseconds delay) {
  std::lock_guard g{fault_mutex_};
  delayed_responses_ = count;
  response_delay_ = delay;
}

void domain::inject_malformed(drv::vcpu_id id, malformed_kind kind) {
  if (kind != malformed_kind::vcpu_out_of_range) {
    auto& v = *vcpus_.at(id);
    std::lock_guard vl{v.mutex};
    std::shared_lock xl{exec_};
    v.malformed = kind;
    return;
  }
  drv::event ev;
  {
    std::shared_lock xl{exec_};
    std::lock_guard g{orphan_mutex_};
    if (!events_started_ || state_ != drv::domain_state::running
        || orphans_outstanding_ >= ring_slots)
      return;
    ++orphans_outstanding_;
    ++requests_raised_;
    ++deliveries_in_flight_;
    ev = make_event(*vcpus_.at(id), drv::event_reason::mem_access);
    ev.vcpu = uint32_t(vcpus_.size()) + 3;
  }
  deliver(ev, true);
}

void domain::kill() {
  hv_.destroy_domain(id_);
}

// --- hypervisor -----------------------------------------------------------------------------

hypervisor::hypervisor(hypervisor_config cfg) : cfg_(cfg) {
  if (cfg_.slice_instructions == 0)
    cfg_.slice_instructions = 1;
  if (cfg_.threaded)
    runner_ = std::thread([this] { runner_loop(); });
}

hypervisor::~hypervisor() {
  {
    std::lock_guard g{queue_mutex_};
    stopping_ = true;
  }
  queue_cv_.notify_all();
  if (runner_.joinable())
    runner_.join();
}

std::shared_ptr<domain> hypervisor::create_domain(domain_config cfg) {
  std::shared_ptr<domain> d;
  {
    std::lock_guard g{domains_mutex_};
    d = std::make_shared<domain>(*this, next_id_++, std::move(cfg));
    domains_.emplace(d->id(), d);
  }
  notify({d->info(), true});
  return d;
}

void hypervisor::destroy_domain(drv::domain_id id) {
  std::shared_ptr<domain> d;
  {
    std::lock_guard g{domains_mutex_};
    auto i = domains_.find(id);
    if (i == domains_.end())
      return;
    d = i->second;
    domains_.erase(i);
  }
  {
    std::unique_lock xl{d->exec_};
    d->state_ = drv::domain_state::dying;
    for (auto& v : d->vcpus_)
      d->dropped_by_death_ += v->state == domain::run_state::waiting;
    std::lock_guard og{d->orphan_mutex_};
    d->dropped_by_death_ += std::exchange(d->orphans_outstanding_, 0);
  }
  d->wait_for_deliveries();
  d->state_ = drv::domain_state::dead;
  notify({d->info(), false});
}

std::shared_ptr<domain> hypervisor::find(drv::domain_id id) const {
  std::lock_guard g{domains_mutex_};
  auto i = domains_.find(id);
  return i == domains_.end() ? nullptr : i->second;
}

std::vector<std::shared_ptr<domain>> hypervisor::domains() const {
  std::lock_guard g{domains_mutex_};
  std::vector<std::shared_ptr<domain>> out;
  for (auto& [id, d] : domains_)
    out.push_back(d);
  return out;
}

uint64_t hypervisor::add_watch(std::function<void(const drv::domain_change&)> fn) {
  std::lock_guard g{watch_mutex_};
  watches_.emplace(next_watch_, std::move(fn));
  return next_watch_++;
}

void hypervisor::remove_watch(uint64_t token) {
  std::lock_guard g{watch_mutex_};
  watches_.erase(token);
}

void hypervisor::notify(const drv::domain_change& change) {
  std::lock_guard g{watch_mutex_};
  for (auto& [token, fn] : watches_)
    fn(change);
}

void hypervisor::enqueue(std::shared_ptr<domain> d, drv::vcpu_id vcpu,
                         steady_clock::time_point at) {
  {
    std::lock_guard g{queue_mutex_};
    if (at == steady_clock::time_point{})
      ready_.emplace_back(d, vcpu);
    else
      timed_.emplace(at, std::pair{std::weak_ptr<domain>{d}, vcpu});
  }
  queue_cv_.notify_one();
}

bool hypervisor::pop(std::pair<std::weak_ptr<domain>, drv::vcpu_id>& out, bool wait) {
  std::unique_lock g{queue_mutex_};
  for (;;) {
    if (stopping_)
      return false;
    auto now = steady_clock::now();
    while (!timed_.empty() && timed_.begin()->first <= now) {
      ready_.push_back(timed_.begin()->second);
      timed_.erase(timed_.begin());
    }
    if (!ready_.empty()) {
      out = ready_.front();
      ready_.pop_front();
      return true;
    }
    if (!wait)
      return false;
    if (timed_.empty())
      queue_cv_.wait(g);
    else
      queue_cv_.wait_until(g, timed_.begin()->first);
  }
}

void hypervisor::runner_loop() {
  std::pair<std::weak_ptr<domain>, drv::vcpu_id> item;
  while (pop(item, true))
    if (auto d = item.first.lock())
      d->run_slice(item.second);
}

size_t hypervisor::run_pending(size_t max_slices) {
  size_t ran = 0;
  std::pair<std::weak_ptr<domain>, drv::vcpu_id> item;
  while (ran < max_slices && pop(item, false)) {
    if (auto d = item.first.lock())
      d->run_slice(item.second);
    ++ran;
  }
  return ran;
}

}  // namespace vmitap::sim
