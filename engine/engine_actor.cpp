#include "engine/engine_actor.hpp"

#include "actors/model/join.hpp"
#include "drivers/error.hpp"
#include "engine/reload_plan.hpp"

#include <caf/actor_system.hpp>
#include <caf/send.hpp>

#include <spdlog/spdlog.h>

namespace vmitap {

namespace {

using engine_ptr = engine_actor::stateful_pointer<engine_state>;

/// Keeps an ended session's report for the summary. Past the bound the oldest is folded
/// into its domain's sum, never dropped; every session the stop detaches reports apart.
void keep_ended(engine_ptr self, domain_report r) {
  auto& st = self->state;
  st.ended.push_back(std::move(r));
  if (!st.stopping && st.ended.size() > st.cfg->ended_reports_kept) {
    auto& oldest = st.ended.front();
    if (auto [it, added] = st.folded.try_emplace(oldest.name, oldest); !added)
      fold(it->second, oldest);
    st.ended.pop_front();
  }
}

/// One detach answered: a stop waiting for the last one goes on.
void detach_answered(engine_ptr self) {
  auto& st = self->state;
  if (--st.detaches_in_flight == 0 && st.after_detaches)
    std::exchange(st.after_detaches, nullptr)();
}

/// Detaches one domain's session; `done` runs once its report is in.
void collect_detach(engine_ptr self, drv::domain_id id, std::function<void()> done = {},
                    std::string error = {}) {
  auto& st = self->state;
  auto it = st.domains.find(id);
  if (it == st.domains.end()) {
    if (done)
      done();
    return;
  }
  auto m = it->second;
  st.domains.erase(it);
  if (m.attached)
    --st.env.counters->domains_monitored;
  ++st.detaches_in_flight;
  self->request(m.supervisor, st.cfg->stop_deadline, detach_atom_v)
    .then(
      [self, done, error](domain_report& r) {
        if (r.error.empty())
          r.error = error;
        if (!r.error.empty())
          spdlog::warn("domain {} ({}): {}", r.name, r.id, r.error);
        else
          spdlog::info("domain {} ({}) detached{}", r.name, r.id, r.died ? " (it died)" : "");
        keep_ended(self, std::move(r));
        if (done)
          done();
        detach_answered(self);
      },
      [self, m, done](caf::error& err) {
        // The teardown watchdog: what is still outstanding, from the watch (the teardown's
        // actor may be stuck in a driver call). The teardown goes on if it can.
        auto what = err == caf::sec::request_timeout
                      ? "detach exceeded its deadline of " +
                          std::to_string(self->state.cfg->stop_deadline.count()) + " ms, " +
                          m.watch->describe()
                      : "detach: " + render(err);
        spdlog::error("domain {} ({}): {}", m.info.name, m.info.id, what);
        domain_report r;
        r.id = m.info.id;
        r.name = m.info.name;
        r.error = std::move(what);
        keep_ended(self, std::move(r));
        if (done)
          done();
        detach_answered(self);
      });
}

void start_domain(engine_ptr self, const drv::domain_info& info) {
  auto& st = self->state;
  if (st.stopping || st.domains.count(info.id) || info.state == drv::domain_state::dying ||
      info.state == drv::domain_state::dead)
    return;
  auto entries = st.cfg->entries_for(info);
  if (entries.empty())
    return;
  if (entries.size() > 1) {
    if (!st.refused.insert(info.id).second)
      return;  // said already
    // Which entry's breakpoints would be meant is the user's to say: none are armed, and the
    // summary, the metrics and the exit code say so.
    std::string where;
    for (auto* e : entries)
      where += (where.empty() ? "" : ", ") + e->select.describe() +
               (e->line ? " (line " + std::to_string(e->line) + ")" : std::string{});
    domain_report r;
    r.id = info.id;
    r.name = info.name;
    r.error = "not attached: selected by more than one [[domain]] entry: " + where +
              "; a domain must match exactly one";
    spdlog::error("domain {} ({}): {}", info.name, info.id, r.error);
    st.env.counters->attach_failed.add();
    keep_ended(self, std::move(r));
    return;
  }
  auto* entry = entries.front();
  supervisor_config sc;
  sc.driver = st.env.driver;
  sc.info = info;
  sc.plan = entry->plan;
  for (auto& name : entry->sinks)
    sc.sinks.push_back(st.sinks.at(name));
  sc.pollers = st.env.pollers;
  sc.handlers = st.env.handlers;
  sc.directory = st.env.directory;
  sc.session = st.next_session++;
  sc.detached_children = st.cfg->detached_children;
  sc.watch = std::make_shared<teardown_watch>();
  auto watch = sc.watch;
  auto sup = self->spawn(domain_supervisor, std::move(sc));
  auto handle = caf::actor_cast<domain_supervisor_actor>(sup);
  st.domains.emplace(info.id, engine_state::monitored{handle, info, false, std::move(watch)});
  self->request(handle, defaults::attach_timeout, attach_atom_v)
    .then(
      [self, info, handle](ok_atom) {
        auto& st = self->state;
        auto it = st.domains.find(info.id);
        if (it == st.domains.end() || it->second.supervisor != handle)
          return;  // a stop or reload detached it meanwhile: it is not monitored
        it->second.attached = true;
        st.env.counters->attach_ok.add();
        ++st.env.counters->domains_monitored;
        spdlog::info("domain {} ({}) attached: {} vcpus", info.name, info.id, info.vcpus);
      },
      [self, info, handle](caf::error& err) {
        auto& st = self->state;
        auto it = st.domains.find(info.id);
        if (it == st.domains.end() || it->second.supervisor != handle)
          return;  // stopped while attaching: its detach reports it
        if (domain_gone(err)) {
          spdlog::info("domain {} ({}) went away while attaching", info.name, info.id);
          collect_detach(self, info.id);  // its report says it died
          return;
        }
        st.env.counters->attach_failed.add();
        spdlog::error("domain {} ({}): attach failed: {}", info.name, info.id, render(err));
        collect_detach(self, info.id, {}, "attach: " + render(err));
      });
}

/// Applies a reload: sinks first (nothing changes if one cannot open), then every domain's
/// action, then attaches what the new config selects, then retires the old sinks.
caf::result<ok_atom> reload(engine_ptr self, engine_config_ptr next) {
  auto& st = self->state;
  std::vector<drv::domain_info> monitored;
  for (auto& [id, m] : st.domains)
    monitored.push_back(m.info);
  auto plan = diff(*st.cfg, *next, monitored);
  std::map<std::string, sink_handle> opened;
  for (auto& s : plan.open) {
    auto h = spawn_sink(self->system(), s, st.env.host);
    if (!h) {
      for (auto& [name, o] : opened)
        self->send_exit(o.actor, caf::exit_reason::user_shutdown);
      return std::move(h.error());  // nothing changed
    }
    opened.emplace(s.name, *h);
  }
  std::vector<sink_handle> retired;
  for (auto& name : plan.close)
    if (auto i = st.sinks.find(name); i != st.sinks.end()) {
      retired.push_back(i->second);
      st.env.sinks->close(i->second.queue.get());
      st.sinks.erase(i);
    }
  for (auto& [name, h] : opened) {
    st.sinks[name] = h;
    st.env.sinks->open(h.queue);
  }
  st.cfg = std::move(next);

  auto rp = self->make_response_promise<ok_atom>();
  auto finish = [self, rp, retired](caf::error err) mutable {
    for (auto& h : retired)  // no session sends to them any more
      self->request(h.actor, defaults::request_timeout, flush_atom_v)
        .then(
          [self, h](ok_atom) { self->send_exit(h.actor, caf::exit_reason::user_shutdown); },
          [self, h](caf::error&) { self->send_exit(h.actor, caf::exit_reason::user_shutdown); });
    for (auto& [name, h] : self->state.sinks)  // reopen on reload, as on SIGUSR1
      self->request(h.actor, defaults::request_timeout, reopen_atom_v)
        .then([](ok_atom) {}, [](caf::error&) {});  // the sink logs its own failure
    if (auto domains = self->state.env.driver->list_domains())
      for (auto& d : *domains)
        start_domain(self, d);
    if (err)
      rp.deliver(err);
    else
      rp.deliver(ok_atom_v);
  };
  auto j = join(plan.domains.size(), finish);
  for (auto& a : plan.domains) {
    auto name = st.domains.at(a.id).info.name;
    auto kind = a.kind;
    if (kind == reload_plan::domain_action::keep && a.plan && st.domains.at(a.id).unapplied) {
      spdlog::info("reload: domain {}: arming what the last reload could not", name);
      kind = reload_plan::domain_action::update;
    }
    switch (kind) {
      case reload_plan::domain_action::keep:
        j->report({});
        break;
      case reload_plan::domain_action::detach:
      case reload_plan::domain_action::reattach:
        spdlog::info("reload: domain {}: {}: {}", name, a.reason,
                     a.kind == reload_plan::domain_action::detach ? "detaching" : "re-attaching");
        collect_detach(self, a.id, [j] { j->report({}); });  // `finish` attaches it again
        break;
      case reload_plan::domain_action::update:
        self
          ->request(st.domains.at(a.id).supervisor, defaults::attach_timeout, update_atom_v, a.plan)
          .then(
            [self, j, name, id = a.id](ok_atom) {
              spdlog::debug("reload: domain {}: breakpoints armed as asked", name);
              if (auto i = self->state.domains.find(id); i != self->state.domains.end())
                i->second.unapplied = false;
              j->report({});
            },
            [self, j, name, id = a.id](caf::error& err) {
              if (auto i = self->state.domains.find(id); i != self->state.domains.end())
                i->second.unapplied = true;
              spdlog::error("reload: domain {}: {}", name, render(err));
              j->report(make_error(code_of(err) == ec::none ? ec::invalid_argument : code_of(err),
                                   "domain " + name + ": " + context_of(err)));
            });
        break;
    }
  }
  return rp;
}

caf::result<std::vector<domain_report>> status(engine_ptr self) {
  auto& st = self->state;
  auto rp = self->make_response_promise<std::vector<domain_report>>();
  auto out = std::make_shared<std::vector<domain_report>>(st.ended_reports());
  // A session that cannot answer is left out of the status; it still gets detached.
  auto j = join(st.domains.size(), [rp, out](caf::error) mutable { rp.deliver(std::move(*out)); });
  for (auto& [id, m] : st.domains)
    self->request(m.supervisor, defaults::request_timeout, status_atom_v)
      .then(
        [out, j](domain_report& r) {
          out->push_back(std::move(r));
          j->report({});
        },
        [j](caf::error& err) { j->report(err); });
  return rp;
}

}  // namespace

std::vector<domain_report> engine_state::ended_reports() const {
  std::vector<domain_report> out;
  out.reserve(folded.size() + ended.size());
  for (auto& [name, r] : folded)
    out.push_back(r);
  out.insert(out.end(), ended.begin(), ended.end());
  return out;
}

engine_actor::behavior_type engine_behavior(engine_ptr self, engine_environment env,
                                            engine_config_ptr cfg,
                                            std::map<std::string, sink_handle> sinks) {
  auto& st = self->state;
  st.env = std::move(env);
  st.cfg = std::move(cfg);
  st.sinks = std::move(sinks);
  return {
    [self](started_atom, const drv::domain_info& info) { start_domain(self, info); },
    [self](stopped_atom, const drv::domain_info& info) {
      self->state.refused.erase(info.id);
      auto it = self->state.domains.find(info.id);
      if (it == self->state.domains.end())
        return;
      // A guest shutting down is its normal life, not vmitap's trouble: its session ends.
      spdlog::info("domain {} ({}) stopped while monitored: its session ends", info.name, info.id);
      self->send(it->second.supervisor, died_atom_v);
      collect_detach(self, info.id);
    },
    [self](status_atom) { return status(self); },
    [self](reload_atom, engine_config_ptr& next) { return reload(self, std::move(next)); },
    [self](reopen_atom) {
      auto rp = self->make_response_promise<ok_atom>();
      auto j = join(self->state.sinks.size(), [rp](caf::error err) mutable {
        if (err)
          rp.deliver(err);
        else
          rp.deliver(ok_atom_v);
      });
      for (auto& [name, h] : self->state.sinks)
        self->request(h.actor, defaults::request_timeout, reopen_atom_v)
          .then([j](ok_atom) { j->report({}); }, [j](caf::error& err) { j->report(err); });
      return rp;
    },
    [self](stop_atom) {
      auto& st = self->state;
      st.stopping = true;
      auto rp = self->make_response_promise<std::vector<domain_report>>();
      // A session whose detach began before the stop (a failed attach, a domain that
      // stopped, a reload) is no longer in `domains`: the stop waits for it all the same.
      auto finish = [self, rp]() mutable {
        // Every session has ended: the sinks write out what they hold, then go.
        auto& sinks = self->state.sinks;
        auto flushed = join(sinks.size(), [self, rp](caf::error) mutable {
          for (auto& [name, h] : self->state.sinks)
            self->send_exit(h.actor, caf::exit_reason::user_shutdown);
          rp.deliver(self->state.ended_reports());
        });
        for (auto& [name, h] : sinks)
          self->request(h.actor, defaults::request_timeout, flush_atom_v)
            .then([flushed](ok_atom) { flushed->report({}); },
                  [flushed](caf::error& err) { flushed->report(err); });
      };
      std::vector<drv::domain_id> ids;  // collect_detach erases from domains
      for (auto& [id, m] : st.domains)
        ids.push_back(id);
      for (auto id : ids)
        collect_detach(self, id);
      // Every detach, these and any begun before, counts in detaches_in_flight.
      if (st.detaches_in_flight == 0)
        finish();
      else
        st.after_detaches = std::move(finish);
      return rp;
    },
  };
}

}  // namespace vmitap
