// The supervisor's teardown: the final drain by the poller, the report, the registry's clear,
// the controller's restore, the driver's detach — in that order, from whatever exists.

#include "actors/control/supervisor_steps.hpp"

#include "drivers/defaults.hpp"
#include "drivers/error.hpp"

#include <caf/send.hpp>

namespace vmitap::supervisor {

void note(state_ptr self, caf::error& first, caf::error err) {
  if (!err)
    return;
  if (domain_gone(err)) {
    self->state.died = true;
    return;
  }
  if (!first)
    first = std::move(err);
}

void await_poller(state_ptr self, std::chrono::milliseconds timeout,
                  std::function<void(std::function<void()>)> start,
                  std::function<void(bool timed_out)> then) {
  auto& st = self->state;
  auto token = st.next_token++;
  st.awaiting.emplace(token, std::move(then));
  auto me = caf::actor_cast<domain_supervisor_impl>(self);
  start([me, token] { caf::anon_send(me, released_atom_v, token); });
  self->delayed_send(self, timeout, deadline_atom_v, token);
}

domain_report base_report(state_ptr self) {
  auto& st = self->state;
  domain_report r;
  r.id = st.cfg.info.id;
  r.name = st.cfg.info.name;
  r.died = st.died;
  r.attached = st.attached;
  r.removed = st.removed;
  if (!st.domain)
    return r;
  auto& c = st.domain->counters();
  r.totals = c.totals();
  r.access_calls = c.access_calls.get();
  r.access_changes = c.access_ok.get();
  r.access_failures = c.access_failed.get();
  return r;
}

void full_report(state_ptr self, std::function<void(domain_report)> done) {
  auto r = base_report(self);
  if (!self->state.registry) {
    done(std::move(r));
    return;
  }
  self->request(self->state.registry, defaults::request_timeout, list_atom_v)
    .then(
      [self, r, done](std::vector<breakpoint_ptr>& bps) mutable {
        r.breakpoints.reserve(bps.size());
        for (auto& bp : bps)
          r.breakpoints.push_back(count_of(*bp));
        r.died = self->state.died;
        done(std::move(r));
      },
      [r, done](caf::error& err) mutable {
        r.error = "listing breakpoints: " + render(err);
        done(std::move(r));
      });
}

void finish_teardown(state_ptr self, domain_report report, caf::error err) {
  auto& st = self->state;
  auto& watch = *st.cfg.watch;
  if (st.session) {
    watch.step("detaching");
    auto call = teardown_watch::call(st.cfg.watch, "detach");
    note(self, err, st.session->detach());
  }
  watch.paused(false);  // a detach (or the domain's death) ends vmitap's pauses
  watch.step("done");
  report.died = st.died;
  if (err && report.error.empty())
    report.error = render(err);
  if (st.domain)
    st.cfg.directory->remove(st.domain.get());
  // Links carry only abnormal exits: the children must be told.
  if (st.registry)
    self->send_exit(st.registry, caf::exit_reason::user_shutdown);
  if (st.controller)
    self->send_exit(st.controller, caf::exit_reason::user_shutdown);
  st.now = phase::done;
  if (st.detaching) {
    st.detaching->deliver(std::move(report));
    self->quit();
    return;
  }
  st.final_report = std::move(report);  // for the detach that will come
}

namespace {

using step = teardown_step;

/// Runs the teardown from its current step until a step waits for an answer; each answer
/// comes back through step_done. The one place the teardown moves on.
void advance(state_ptr self) {
  auto& st = self->state;
  auto& td = *st.teardown;
  auto& watch = *st.cfg.watch;
  auto done = [self](caf::error err) { step_done(self, std::move(err)); };
  switch (td.now) {
    case step::pause:
      if (st.session && !st.died) {
        watch.step("pausing the domain");
        auto call = teardown_watch::call(st.cfg.watch, "pause");
        auto err = st.session->pause();  // every request raised so far is in the ring
        watch.paused(!err);
        return done(std::move(err));
      }
      return done({});
    case step::drain: {
      watch.step("draining the ring");
      if (!st.path || !st.owner)
        return done({});
      auto* owner = st.owner;
      auto* path = st.path.get();
      await_poller(
        self, defaults::ring_release_timeout,
        [owner, path](std::function<void()> released) {
          owner->release(path, std::move(released));
        },
        [self, done](bool timed_out) {
          self->state.owner = nullptr;
          done(timed_out ? make_error(ec::timeout, "the poller did not release the ring")
                         : caf::error{});
        });
      return;
    }
    case step::report:
      watch.step("listing breakpoints");
      full_report(self, [self, done](domain_report report) {
        self->state.teardown->report = std::move(report);
        done({});
      });
      return;
    case step::clear:
      if (!st.registry || st.died)
        return done({});
      watch.step("removing breakpoints");
      // A page the clear could not restore is the restore step's to retry: only what that
      // step cannot restore is the teardown's error (a dead domain still ends it here).
      self->request(st.registry, defaults::access_change_timeout, clear_atom_v)
        .then([done](ok_atom) { done({}); },
              [done](caf::error& err) { done(domain_gone(err) ? err : caf::error{}); });
      return;
    case step::restore:
      if (!st.controller || st.died)
        return done({});
      watch.step("restoring pages and destroying views");
      self->request(st.controller, defaults::access_change_timeout, teardown_atom_v)
        .then([done](ok_atom) { done({}); }, [done](caf::error& err) { done(err); });
      return;
    case step::detach:
      return finish_teardown(self, std::move(td.report), std::move(td.first));
  }
}

}  // namespace

void step_done(state_ptr self, caf::error err) {
  auto& td = *self->state.teardown;
  note(self, td.first, std::move(err));
  td.now = static_cast<step>(static_cast<uint8_t>(td.now) + 1);
  advance(self);
}

void teardown(state_ptr self, caf::error first) {
  auto& st = self->state;
  st.now = phase::detaching;
  st.teardown.emplace();
  st.teardown->first = std::move(first);
  advance(self);
}

}  // namespace vmitap::supervisor
