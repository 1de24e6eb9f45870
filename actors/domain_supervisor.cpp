#include "actors/domain_supervisor.hpp"

#include "actors/breakpoint_registry.hpp"
#include "actors/ept_controller.hpp"
#include "actors/join.hpp"
#include "actors/vcpu.hpp"
#include "engine/defaults.hpp"
#include "engine/error.hpp"

#include <caf/actor_system.hpp>
#include <caf/send.hpp>

namespace vmitap {

namespace {

using state_ptr = domain_supervisor_actor::stateful_pointer<domain_supervisor_state>;

template <class Handle, class... Ts>
auto spawn_child(state_ptr self, Ts&&... xs) {
  if (self->state.detached_children)
    return self->template spawn<caf::detached + caf::linked>(std::forward<Ts>(xs)...);
  return self->template spawn<caf::linked>(std::forward<Ts>(xs)...);
}

/// Spawns controller, VCPU actors and registry once the views exist; starts events.
caf::error spawn_children(state_ptr self) {
  auto& st = self->state;
  std::vector<drv::view_id> view_ids;
  for (auto& name : st.plan.views)
    view_ids.push_back(st.views.at(name));
  auto domain_name = std::make_shared<const std::string>(st.info.name);
  drv::event_handlers handlers;
  for (drv::vcpu_id i = 0; i < st.info.vcpus; ++i) {
    auto home = st.plan.vcpu_views.count(i) ? st.views.at(st.plan.vcpu_views.at(i)) : view_ids[0];
    vcpu_config cfg{st.info.id, domain_name, i,        st.session,
                    st.plan.mode, home,        st.sinks, st.metrics};
    auto v = spawn_child<vcpu_actor>(self, vcpu, std::move(cfg));
    st.vcpus.push_back(v);
    handlers.per_vcpu.push_back([v](const drv::event& ev) {
      caf::anon_send(v, event_atom::value, ev, seen_now());
    });
  }
  auto me = caf::actor_cast<domain_supervisor_actor>(self);
  handlers.orphan = [me](const drv::event& ev) { caf::anon_send(me, orphan_atom::value, ev); };
  st.registry = spawn_child<breakpoint_registry_actor>(self, breakpoint_registry, st.controller,
                                                       st.vcpus, view_ids, st.info.max_gfn,
                                                       st.metrics);
  if (auto err = st.session->switch_all(view_ids[0]))
    return err;
  return st.session->start_events(std::move(handlers));
}

void add_breakpoints(state_ptr self, caf::typed_response_promise<ok_atom> rp) {
  auto& st = self->state;
  auto j = join(st.plan.breakpoints.size(), [self, rp](caf::error err) mutable {
    if (auto e = self->state.session->resume(); e && !err)
      err = e;
    if (err)
      rp.deliver(err);
    else
      rp.deliver(ok_atom::value);
  });
  for (auto& bp : st.plan.breakpoints) {
    breakpoint_spec spec{bp.pa, st.views.at(bp.view), bp.name, bp.tags};
    self->request(st.registry, defaults::attach_timeout, add_atom::value, std::move(spec))
      .then(
        [self, j, name = bp.name](uint64_t id) {
          self->state.breakpoint_ids[name] = id;
          j->report({});
        },
        [j](caf::error& err) { j->report(err); });
  }
}

caf::result<ok_atom> attach(state_ptr self) {
  auto& st = self->state;
  for (auto& bp : st.plan.breakpoints)
    if (std::find(st.plan.views.begin(), st.plan.views.end(), bp.view) == st.plan.views.end())
      return make_error(ec::no_such_view, "breakpoint " + bp.name + ": view " + bp.view
                                            + " is not declared for domain " + st.info.name);
  auto session = st.driver->attach(st.info.id);
  if (!session)
    return std::move(session.error());
  st.session = std::move(*session);
  // Nothing runs until every breakpoint is armed, so hits are exact from the first one.
  if (auto err = st.session->pause())
    return err;
  st.controller = spawn_child<ept_controller_actor>(self, ept_controller, st.session, st.metrics);
  auto rp = self->make_response_promise<ok_atom>();
  auto j = join(st.plan.views.size(), [self, rp](caf::error err) mutable {
    if (!err)
      err = spawn_children(self);
    if (err) {
      rp.deliver(err);
      return;
    }
    add_breakpoints(self, rp);
  });
  for (auto& name : st.plan.views)
    self->request(st.controller, defaults::request_timeout, create_atom::value,
                  drv::page_access::rwx)
      .then([self, j, name](drv::view_id id) {
              self->state.views[name] = id;
              self->state.metrics->name_view(id, name);
              j->report({});
            },
            [j](caf::error& err) { j->report(err); });
  return rp;
}

/// Collects the counts of every VCPU actor (after all events queued before the call).
void gather(state_ptr self, std::function<void(domain_report)> done) {
  auto& st = self->state;
  auto report = std::make_shared<domain_report>();
  report->id = st.info.id;
  report->name = st.info.name;
  report->died = st.died;
  report->totals.malformed = st.orphans;
  auto finish = [self, report, done](caf::error err) {
    if (err && report->error.empty())
      report->error = render(err);
    if (!self->state.registry) {
      done(*report);
      return;
    }
    self->request(self->state.registry, defaults::request_timeout, list_atom::value)
      .then(
        [self, report, done](std::vector<breakpoint_ptr>& bps) {
          report->breakpoints = std::move(bps);
          self->request(self->state.controller, defaults::request_timeout, status_atom::value)
            .then(
              [report, done](uint64_t calls, uint64_t changes, uint64_t failures) {
                report->access_calls = calls;
                report->access_changes = changes;
                report->access_failures = failures;
                done(*report);
              },
              [report, done](caf::error&) { done(*report); });
        },
        [report, done](caf::error& err) {
          report->error = render(err);
          done(*report);
        });
  };
  auto j = join(st.vcpus.size(), finish);
  for (auto& v : st.vcpus)
    self->request(v, defaults::request_timeout, drain_atom::value)
      .then(
        [report, j](const vcpu_stats& s) {
          report->totals += s;
          j->report({});
        },
        [j](caf::error& err) { j->report(err); });
}

void shut_down_children(state_ptr self) {
  auto& st = self->state;
  for (auto& v : st.vcpus)
    self->send_exit(v, caf::exit_reason::user_shutdown);
  if (st.registry)
    self->send_exit(st.registry, caf::exit_reason::user_shutdown);
  if (st.controller)
    self->send_exit(st.controller, caf::exit_reason::user_shutdown);
}

/// stop events (pause) → drain → final counts → remove breakpoints → restore → views → detach.
caf::result<domain_report> detach(state_ptr self) {
  auto& st = self->state;
  auto rp = self->make_response_promise<domain_report>();
  auto finish = [self, rp](domain_report report, caf::error err) mutable {
    auto& st = self->state;
    if (st.session && !st.detached)
      if (auto e = st.session->detach(); e && !err)
        err = e;
    st.detached = true;
    if (err && report.error.empty())
      report.error = render(err);
    shut_down_children(self);
    rp.deliver(std::move(report));
    self->quit();
  };
  if (!st.session) {
    domain_report report;
    report.id = st.info.id;
    report.name = st.info.name;
    finish(report, {});
    return rp;
  }
  if (!st.died)
    st.session->pause();  // every raised event is in a VCPU mailbox when this returns
  gather(self, [self, finish](domain_report report) mutable {
    auto& st = self->state;
    if (st.died || !st.registry) {
      finish(std::move(report), {});
      return;
    }
    self->request(st.registry, defaults::stop_deadline, clear_atom::value)
      .then(
        [self, finish, report](ok_atom) mutable {
          self->request(self->state.controller, defaults::stop_deadline, teardown_atom::value)
            .then([finish, report](ok_atom) mutable { finish(report, {}); },
                  [finish, report](caf::error& err) mutable { finish(report, err); });
        },
        [self, finish, report](caf::error& err) mutable {
          // Still try the controller's teardown: it restores what it can.
          self->request(self->state.controller, defaults::stop_deadline, teardown_atom::value)
            .then([finish, report, err](ok_atom) mutable { finish(report, err); },
                  [finish, report, err](caf::error&) mutable { finish(report, err); });
        });
  });
  return rp;
}

/// Removes what the new plan lacks or changed, then adds what is new or changed.
caf::result<ok_atom> update(state_ptr self, domain_plan plan) {
  auto& st = self->state;
  if (!plan.same_shape(st.plan))
    return make_error(ec::invalid_argument, "update: views or step mode differ; re-attach");
  auto unchanged = [&](const domain_plan::breakpoint& bp) {
    return std::find(plan.breakpoints.begin(), plan.breakpoints.end(), bp)
           != plan.breakpoints.end();
  };
  std::vector<std::string> removed;
  for (auto& bp : st.plan.breakpoints)
    if (!unchanged(bp))
      removed.push_back(bp.name);
  std::vector<domain_plan::breakpoint> added;
  for (auto& bp : plan.breakpoints)
    if (std::find(st.plan.breakpoints.begin(), st.plan.breakpoints.end(), bp)
        == st.plan.breakpoints.end())
      added.push_back(bp);
  st.plan = std::move(plan);
  auto rp = self->make_response_promise<ok_atom>();
  auto add_all = [self, rp, added](caf::error removal_error) mutable {
    auto j = join(added.size(), [rp, removal_error](caf::error err) mutable {
      if (!err)
        err = removal_error;
      if (err)
        rp.deliver(err);
      else
        rp.deliver(ok_atom::value);
    });
    for (auto& bp : added) {
      breakpoint_spec spec{bp.pa, self->state.views.at(bp.view), bp.name, bp.tags, true};
      self->request(self->state.registry, defaults::access_change_timeout, add_atom::value, spec)
        .then(
          [self, j, name = bp.name](uint64_t id) {
            self->state.breakpoint_ids[name] = id;
            j->report({});
          },
          [j](caf::error& err) { j->report(err); });
    }
  };
  auto j = join(removed.size(), add_all);
  for (auto& name : removed) {
    auto id = st.breakpoint_ids.find(name);
    if (id == st.breakpoint_ids.end()) {  // it never got armed
      j->report({});
      continue;
    }
    auto bp_id = id->second;
    st.breakpoint_ids.erase(id);
    self->request(st.registry, defaults::access_change_timeout, remove_atom::value, bp_id)
      .then([j](ok_atom) { j->report({}); }, [j](caf::error& err) { j->report(err); });
  }
  return rp;
}

}  // namespace

domain_supervisor_actor::behavior_type
domain_supervisor(state_ptr self, std::shared_ptr<drv::driver> driver, drv::domain_info info,
                  domain_plan plan, std::vector<sink_handle> sinks, bool detached_children,
                  std::shared_ptr<domain_metrics> metrics) {
  auto& st = self->state;
  st.driver = std::move(driver);
  st.info = std::move(info);
  st.plan = std::move(plan);
  st.sinks = std::move(sinks);
  st.detached_children = detached_children;
  st.metrics = std::move(metrics);
  return {
    [self](attach_atom) { return attach(self); },
    [self](detach_atom) { return detach(self); },
    [self](status_atom) {
      auto rp = self->make_response_promise<domain_report>();
      gather(self, [rp](domain_report r) mutable { rp.deliver(std::move(r)); });
      return rp;
    },
    [self](registry_atom) { return self->state.registry; },
    [self](update_atom, domain_plan& plan) { return update(self, std::move(plan)); },
    [self](died_atom) { self->state.died = true; },
    [self](orphan_atom, const drv::event& ev) {
      ++self->state.orphans;
      self->state.metrics->malformed(malformed_cause::vcpu_out_of_range).Increment();
      if (self->state.session)
        self->state.session->respond(drv::make_response(ev));
    },
  };
}

}  // namespace vmitap
