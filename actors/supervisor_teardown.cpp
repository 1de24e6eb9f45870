// The supervisor's teardown: the final drain by the poller, the report, the registry's clear,
// the controller's restore, the driver's detach — in that order, from whatever exists.

#include "actors/supervisor_steps.hpp"

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
  start([me, token] { caf::anon_send(me, released_atom::value, token << 1); });
  self->delayed_send(self, timeout, released_atom::value, (token << 1) | 1);
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
  for (uint32_t i = 0; i < c.vcpu_count; ++i) {
    auto& v = c.vcpus[i];
    r.totals.events += v.mem_access.get() + v.singlestep.get() + v.other.get();
    r.totals.hits += v.hits.get();
    r.totals.neighbours += v.neighbours.get();
    r.totals.stale += v.stale.get();
    r.totals.spurious += v.spurious.get();
    r.totals.singlesteps += v.singlestep.get();
    for (auto& m : v.malformed)
      r.totals.malformed += m.get();
  }
  r.totals.events += c.orphans.get();
  r.totals.malformed += c.orphans.get();
  r.totals.respond_failures = c.respond_failures.get();
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
  self->request(self->state.registry, defaults::request_timeout, list_atom::value)
    .then(
      [self, r, done](std::vector<breakpoint_ptr>& bps) mutable {
        r.breakpoints = std::move(bps);
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

void teardown(state_ptr self, caf::error first) {
  auto& st = self->state;
  st.now = phase::detaching;
  auto& watch = *st.cfg.watch;
  if (st.session && !st.died) {
    watch.step("pausing the domain");
    auto call = teardown_watch::call(st.cfg.watch, "pause");
    auto err = st.session->pause();  // every request raised so far is in the ring
    watch.paused(!err);
    note(self, first, std::move(err));
  }
  watch.step("draining the ring");
  auto after_drain = [self, first](bool timed_out) mutable {
    auto& st = self->state;
    if (timed_out)
      note(self, first, make_error(ec::timeout, "the poller did not release the ring"));
    st.owner = nullptr;
    st.cfg.watch->step("listing breakpoints");
    full_report(self, [self, first](domain_report report) mutable {
      auto& st = self->state;
      auto restore = [self, report, first]() mutable {
        auto& st = self->state;
        if (!st.controller || st.died) {
          finish_teardown(self, std::move(report), std::move(first));
          return;
        }
        st.cfg.watch->step("restoring pages and destroying views");
        self->request(st.controller, defaults::access_change_timeout, teardown_atom::value)
          .then([self, report, first](ok_atom) mutable {
                  finish_teardown(self, std::move(report), std::move(first));
                },
                [self, report, first](caf::error& err) mutable {
                  note(self, first, err);
                  finish_teardown(self, std::move(report), std::move(first));
                });
      };
      if (!st.registry || st.died) {
        restore();
        return;
      }
      st.cfg.watch->step("removing breakpoints");
      self->request(st.registry, defaults::access_change_timeout, clear_atom::value)
        .then([restore](ok_atom) mutable { restore(); },
              [self, restore, first](caf::error& err) mutable {
                note(self, first, err);  // the controller restores what it still can
                restore();
              });
    });
  };
  if (!st.path || !st.owner) {
    after_drain(false);
    return;
  }
  auto* owner = st.owner;
  auto* path = st.path.get();
  await_poller(
    self, defaults::ring_release_timeout,
    [owner, path](std::function<void()> done) { owner->release(path, std::move(done)); },
    std::move(after_drain));
}

}  // namespace vmitap::supervisor
