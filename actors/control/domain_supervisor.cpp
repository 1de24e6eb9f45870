#include "actors/control/domain_supervisor.hpp"

#include "actors/control/supervisor_steps.hpp"
#include "actors/control/symbol_resolver.hpp"
#include "actors/handlers/handler_relay.hpp"
#include "actors/model/join.hpp"
#include "drivers/defaults.hpp"
#include "drivers/error.hpp"

#include <caf/actor_system.hpp>
#include <caf/send.hpp>

#include <spdlog/spdlog.h>

namespace vmitap {

namespace {

using namespace supervisor;

template <class Fun, class... Ts>
auto spawn_child(state_ptr self, Fun fun, Ts&&... xs) {
  if (self->state.cfg.detached_children)
    return self->spawn<caf::detached + caf::linked>(fun, std::forward<Ts>(xs)...);
  return self->spawn<caf::linked>(fun, std::forward<Ts>(xs)...);
}

/// Called between attach steps: false if a stop or the domain's death ended the attach.
bool still_attaching(state_ptr self, caf::error err = {}) {
  auto& st = self->state;
  // A stop or the domain's death ends the attach; neither is a failure of the session.
  caf::error failure = std::move(err);
  caf::error reason = failure;
  if (!reason && st.detaching)
    reason = make_error(ec::shutting_down, "stopped while attaching");
  if (!reason && st.died)
    reason = make_error(ec::domain_dead, "the domain died while attaching");
  if (!reason)
    return true;
  st.attaching->deliver(reason);
  st.attaching.reset();
  caf::error first;
  note(self, first, std::move(failure));  // the report names a real failure only
  teardown(self, std::move(first));
  return false;
}

/// The step mode to use: the plan's, unless the driver advises against fast step-over and
/// the config did not ask for it.
step_mode step_mode_for(state_ptr self) {
  auto& st = self->state;
  auto& plan = *st.cfg.plan;
  if (plan.mode != step_mode::fast)
    return plan.mode;
  auto caps = st.cfg.driver->caps();
  if (caps.fast_singlestep)
    return plan.mode;
  if (plan.mode_chosen) {
    spdlog::warn("domain {}: step = \"fast\" as configured, although {}", st.cfg.info.name,
                 caps.why);
    return plan.mode;
  }
  spdlog::info("domain {}: classic step-over: {}", st.cfg.info.name, caps.why);
  return step_mode::classic;
}

void start_events(state_ptr self) {
  auto& st = self->state;
  auto& plan = *st.cfg.plan;
  event_path_config pc;
  pc.domain = st.domain;
  pc.session = st.session;
  pc.mode = step_mode_for(self);
  pc.sinks = st.cfg.sinks;
  pc.registry = st.registry;
  pc.kernel = st.kernel;
  if (st.cfg.handlers) {
    // On a thread of its own: the relay sits on the path of every held hit, and on CAF's
    // shared workers each hop would keep them polling on the cores the pollers need.
    st.relay = self->spawn<caf::detached>(handler_relay, st.cfg.handlers, st.domain);
    pc.relay = st.relay;
  }
  auto first = st.views.at(plan.views.front());
  for (drv::vcpu_id i = 0; i < st.cfg.info.vcpus; ++i) {
    auto home = plan.vcpu_views.count(i) ? st.views.at(plan.vcpu_views.at(i)) : first;
    pc.homes.push_back(home);
    pc.homing.push_back(home != first);
  }
  caf::error err;
  for (drv::vcpu_id i = 0; i < st.cfg.info.vcpus && !err; ++i)
    if (pc.homing[i])  // its first step takes it home (the only per-VCPU view switch Xen has)
      err = st.session->set_singlestep(i, true);
  if (!err)
    err = st.session->switch_all(first);
  if (!err) {
    auto ring = st.session->start_events();
    if (!ring) {
      err = std::move(ring.error());
    } else {
      pc.ring = *ring;
      st.path = std::make_shared<event_path>(std::move(pc));
      st.owner = &st.cfg.pollers->pick();
      st.owner->add(st.path);
    }
  }
  if (!err) {
    err = st.session->resume();
    st.cfg.watch->paused(bool(err));
  }
  if (!still_attaching(self, err))
    return;
  st.now = phase::attached;
  st.attached = true;
  st.attaching->deliver(ok_atom_v);
  st.attaching.reset();
  if (st.next_plan)  // a reload came while attaching
    self
      ->request(caf::actor_cast<domain_supervisor_actor>(self), defaults::access_change_timeout,
                update_atom_v, std::exchange(st.next_plan, nullptr))
      .then([](ok_atom) {},
            [self](caf::error& err) {
              spdlog::error("domain {}: reload after attach: {}", self->state.cfg.info.name,
                            render(err));
            });
}

/// "name: why; name: why" for breakpoints the registry or the resolver could not arm.
template <class Result>
std::string describe_failures(const Result& r) {
  std::string out;
  for (auto& [name, why] : r.failed)
    out += (out.empty() ? "" : "; ") + name + ": " + render(why);
  return out;
}

/// Resolves the symbols of `defs` through the kernel found at attach.
resolution resolve(state_ptr self, const std::vector<breakpoint_def>& defs) {
  auto& st = self->state;
  return resolve_symbols(st.cfg.plan->profile.get(), st.kernel.get(), defs);
}

void arm(state_ptr self) {
  auto& st = self->state;
  auto r = resolve(self, st.cfg.plan->breakpoints);
  if (!r.failed.empty()) {
    still_attaching(
      self, make_error(ec::invalid_argument, "breakpoints not armed: " + describe_failures(r)));
    return;
  }
  auto defs = std::move(r.resolved);
  std::map<std::string, drv::view_id> ids;
  std::map<drv::view_id, std::string> names;
  for (auto& name : st.cfg.plan->views) {
    ids[name] = st.views.at(name);
    names[st.views.at(name)] = name;
  }
  st.domain->name_views(std::move(names));
  st.cfg.directory->add(st.domain);
  spdlog::debug("domain {}: attach: {} view(s) created, arming {} breakpoint(s)", st.cfg.info.name,
                ids.size(), st.cfg.plan->breakpoints.size());
  st.registry = spawn_child(
    self, breakpoint_registry,
    breakpoint_registry_config{st.controller, st.domain, std::move(ids), st.session->info().max_gfn,
                               st.session, st.kernel ? st.kernel->cr3 : 0});
  // Nothing runs until every breakpoint is armed, so hits are exact from the first one.
  self
    ->request(st.registry, defaults::attach_timeout, add_atom_v, std::move(defs), armed_by::attach)
    .then(
      [self](batch_result& r) {
        caf::error err;
        if (r.domain_gone)
          err = make_error(ec::domain_dead, "the domain went away while breakpoints were armed");
        else if (!r.failed.empty())
          err = make_error(ec::invalid_argument, "breakpoints not armed: " + describe_failures(r));
        if (still_attaching(self, err))
          start_events(self);
      },
      [self](caf::error& err) { still_attaching(self, err); });
}

/// With a profile: finds the kernel (the domain is paused) before anything is armed. While
/// every VCPU is in user mode the domain runs a little between looks, a bounded number of
/// times; a profile for another kernel fails the attach with nothing armed.
void locate(state_ptr self) {
  auto& st = self->state;
  const auto& profile = st.cfg.plan->profile;
  if (!profile)
    return arm(self);
  auto found = drv::locate_kernel(*st.session, *profile, st.cfg.info.vcpus);
  if (!found && code_of(found.error()) == ec::no_kernel_mode_vcpu &&
      ++st.locate_tries < defaults::kernel_mode_tries) {
    if (st.locate_tries == 1)
      spdlog::info("domain {}: {}", st.cfg.info.name, render(found.error()));
    auto resumed = st.session->resume();
    st.cfg.watch->paused(bool(resumed));
    if (!still_attaching(self, std::move(resumed)))
      return;
    self->delayed_send(self, defaults::kernel_mode_wait, locate_atom_v);
    return;
  }
  if (!found) {
    auto why = context_of(found.error());
    if (code_of(found.error()) == ec::no_kernel_mode_vcpu) {
      auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(
        defaults::kernel_mode_wait * st.locate_tries);
      why = "no VCPU entered kernel mode in " + std::to_string(st.locate_tries) + " looks over " +
            std::to_string(waited.count()) +
            " ms (under KPTI a VCPU in user mode does not map the kernel)";
    }
    still_attaching(self,
                    make_error(code_of(found.error()), "profile " + profile->path + ": " + why));
    return;
  }
  st.kernel = std::make_shared<const drv::kernel_map>(std::move(*found));
  const auto& k = *st.kernel;
  auto where = k.os == drv::kernel_os::windows_kernel
                 ? fmt::format("image base {:#x}", k.image_base)
                 : fmt::format("KASLR slide {:#x}", k.slide);
  spdlog::info("domain {}: {} kernel found through VCPU {} ({}): {}", st.cfg.info.name,
               drv::to_string(k.os), k.vcpu, where, k.identity.substr(0, k.identity.find('\n')));
  if (!st.kernel->reads_processes)
    spdlog::warn(
      "domain {}: profile {} lacks the structures that name a process: hits carry "
      "none, and processes filters do not apply",
      st.cfg.info.name, profile->path);
  arm(self);
}

/// The domain ran while no VCPU was in kernel mode: pause it and look again.
void relocate(state_ptr self) {
  auto& st = self->state;
  if (st.now != phase::attaching || !still_attaching(self))
    return;  // a stop or the domain's death came while it ran
  auto paused = st.session->pause();
  st.cfg.watch->paused(!paused);
  if (still_attaching(self, std::move(paused)))
    locate(self);
}

caf::result<ok_atom> attach(state_ptr self) {
  auto& st = self->state;
  if (st.now != phase::idle)
    return make_error(ec::invalid_argument, "attach: this supervisor attached already");
  st.now = phase::attaching;
  auto rp = self->make_response_promise<ok_atom>();
  st.attaching = rp;
  auto session = st.cfg.driver->attach(st.cfg.info.id);
  if (!session) {
    still_attaching(self, session.error());
    return rp;
  }
  st.session = std::move(*session);
  st.domain = std::make_shared<monitored_domain>(st.cfg.info, st.cfg.session);
  auto paused = st.session->pause();
  st.cfg.watch->paused(!paused);
  if (!still_attaching(self, std::move(paused)))
    return rp;
  spdlog::debug("domain {}: attach: session open, domain paused, creating {} view(s)",
                st.cfg.info.name, st.cfg.plan->views.size());
  st.controller =
    spawn_child(self, ept_controller, ept_controller_config{st.session, st.domain, st.cfg.watch});
  auto j = join(st.cfg.plan->views.size(), [self](caf::error err) {
    if (still_attaching(self, err))
      locate(self);
  });
  for (auto& name : st.cfg.plan->views)
    self->request(st.controller, defaults::request_timeout, create_atom_v, drv::page_access::rwx)
      .then(
        [self, j, name](drv::view_id id) {
          self->state.views[name] = id;
          j->report({});
        },
        [j](caf::error& err) { j->report(err); });
  return rp;
}

/// The poller answered the wait under `token`, or its deadline passed; whichever comes first
/// continues it.
void poller_answered(state_ptr self, uint64_t token, bool timed_out) {
  auto& st = self->state;
  auto i = st.awaiting.find(token);
  if (i == st.awaiting.end())
    return;  // answered already (or timed out already)
  auto then = std::move(i->second);
  st.awaiting.erase(i);
  then(timed_out);
}

caf::result<domain_report> detach(state_ptr self) {
  auto& st = self->state;
  if (st.detaching)
    return make_error(ec::invalid_argument, "detach: already detaching");
  auto rp = self->make_response_promise<domain_report>();
  st.detaching = rp;
  switch (st.now) {
    case phase::idle:
      finish_teardown(self, base_report(self), {});
      break;
    case phase::attaching:
      break;  // the attach stops at its next step and tears down what it built
    case phase::attached:
      teardown(self, {});
      break;
    case phase::detaching:
      break;  // a failed attach is tearing down: this detach gets its report
    case phase::done:
      rp.deliver(std::move(st.final_report));
      self->quit();
      break;
  }
  return rp;
}

/// Removes what the new plan lacks or changed, then adds what is new or changed.
caf::result<ok_atom> update(state_ptr self, plan_ptr plan) {
  auto& st = self->state;
  if (st.now == phase::attaching) {
    st.next_plan = std::move(plan);  // applied once attached
    return ok_atom_v;
  }
  if (st.now != phase::attached)
    return make_error(ec::shutting_down, "update: the domain is being detached");
  if (!plan->same_shape(*st.cfg.plan))
    return make_error(ec::invalid_argument,
                      "update: views, step mode or kernel profile differ; re-attach");
  auto in = [](const domain_plan& p, const breakpoint_def& bp) {
    return std::find(p.breakpoints.begin(), p.breakpoints.end(), bp) != p.breakpoints.end();
  };
  std::vector<std::string> removed;
  for (auto& bp : st.cfg.plan->breakpoints)
    if (!in(*plan, bp))
      removed.push_back(bp.name());
  std::vector<breakpoint_def> wanted;
  for (auto& bp : plan->breakpoints)
    if (!in(*st.cfg.plan, bp))
      wanted.push_back(bp);
  // A symbol or virtual address is walked now, with the guest running, through the tables
  // of a VCPU in kernel mode now (the process found at attach may have exited and its
  // tables been freed); failing that, through the newest the registry has seen.
  if (st.kernel && std::any_of(wanted.begin(), wanted.end(), [](auto& d) {
        return d.target.by != breakpoint_target::kind::physical;
      })) {
    if (auto cr3 = drv::kernel_cr3(*st.session, st.cfg.info.vcpus))
      self->send(st.registry, tables_atom_v, *cr3);  // before the add below: one sender, in order
    else
      spdlog::warn("domain {}: reload: {}; walking the tables seen before", st.cfg.info.name,
                   render(cr3.error()));
  }
  auto r = resolve(self, wanted);
  // What could not be armed stays out of the plan: the next reload tries it again.
  if (!r.failed.empty()) {
    auto kept = std::make_shared<domain_plan>(*plan);
    std::erase_if(kept->breakpoints, [&](auto& d) {
      return std::any_of(r.failed.begin(), r.failed.end(),
                         [&](auto& f) { return f.first == d.name(); });
    });
    plan = std::move(kept);
  }
  st.cfg.plan = std::move(plan);
  auto added = std::move(r.resolved);
  auto unresolved = describe_failures(r);
  auto names = [](auto&& list) {
    std::string out;
    for (auto& x : list)
      out += (out.empty() ? "" : ", ") + std::string(x);
    return out.empty() ? std::string("none") : out;
  };
  std::vector<std::string_view> added_names;
  for (auto& bp : added)
    added_names.push_back(bp.name());
  spdlog::info("reload: domain {}: breakpoints removed: {}; added: {}", st.cfg.info.name,
               names(removed), names(added_names));
  auto rp = self->make_response_promise<ok_atom>();
  self->request(st.registry, defaults::access_change_timeout, remove_atom_v, removed)
    .then(
      [self, rp, added = std::move(added), unresolved](batch_result& removal) mutable {
        fold_breakpoints(self->state.removed, removal.removed);
        auto removal_failures = describe_failures(removal);
        if (!unresolved.empty())
          removal_failures += (removal_failures.empty() ? "" : "; ") + unresolved;
        self
          ->request(self->state.registry, defaults::access_change_timeout, add_atom_v,
                    std::move(added), armed_by::reload)
          .then(
            [self, rp, removal_failures](batch_result& r) mutable {
              // What the registry could not arm stays out of the plan too: the next reload
              // tries it again.
              if (!r.failed.empty()) {
                auto kept = std::make_shared<domain_plan>(*self->state.cfg.plan);
                std::erase_if(kept->breakpoints, [&](auto& d) {
                  return std::any_of(r.failed.begin(), r.failed.end(),
                                     [&](auto& f) { return f.first == d.name(); });
                });
                self->state.cfg.plan = std::move(kept);
              }
              auto failures = removal_failures;
              if (!r.failed.empty())
                failures += (failures.empty() ? "" : "; ") + describe_failures(r);
              if (failures.empty())
                rp.deliver(ok_atom_v);
              else
                rp.deliver(make_error(ec::invalid_argument, failures));
            },
            [rp](caf::error& err) mutable { rp.deliver(err); });
      },
      [rp](caf::error& err) mutable { rp.deliver(err); });
  return rp;
}

caf::result<domain_report> status(state_ptr self) {
  auto& st = self->state;
  auto rp = self->make_response_promise<domain_report>();
  auto report = [self, rp](bool) mutable {
    full_report(self, [rp](domain_report r) mutable { rp.deliver(std::move(r)); });
  };
  if (st.now != phase::attached || !st.owner) {
    report(false);
    return rp;
  }
  auto* owner = st.owner;
  auto* path = st.path.get();
  await_poller(
    self, defaults::request_timeout,
    [owner, path](std::function<void()> done) { owner->sync(path, std::move(done)); },
    std::move(report));
  return rp;
}

}  // namespace

domain_supervisor_state::~domain_supervisor_state() {
  if (owner && path)
    owner->release(path.get(), [] {});  // never leave a poller draining a dead supervisor's ring
  if (relay)
    caf::anon_send_exit(relay, caf::exit_reason::user_shutdown);  // and its handlers with it
}

domain_supervisor_impl::behavior_type domain_supervisor(state_ptr self, supervisor_config cfg) {
  self->state.cfg = std::move(cfg);
  if (!self->state.cfg.watch)
    self->state.cfg.watch = std::make_shared<teardown_watch>();
  return {
    [self](attach_atom) { return attach(self); },
    [self](detach_atom) { return detach(self); },
    [self](status_atom) { return status(self); },
    [self](update_atom, plan_ptr& plan) { return update(self, std::move(plan)); },
    [self](died_atom) { self->state.died = true; },
    [self](released_atom, uint64_t token) { poller_answered(self, token, false); },
    [self](deadline_atom, uint64_t token) { poller_answered(self, token, true); },
    [self](locate_atom) { relocate(self); },
  };
}

}  // namespace vmitap
