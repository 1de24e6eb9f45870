#include "engine/engine.hpp"

#include "actors/join.hpp"
#include "engine/error.hpp"

#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <spdlog/spdlog.h>

#include <fnmatch.h>
#include <map>
#include <set>

namespace vmitap {

bool domain_selector::matches(const drv::domain_info& d) const {
  if (id && *id != d.id)
    return false;
  if (!name.empty() && name != d.name)
    return false;
  if (!pattern.empty() && fnmatch(pattern.c_str(), d.name.c_str(), 0) != 0)
    return false;
  return true;
}

namespace {

struct engine_state {
  vmitap::metrics* metrics = nullptr;
  engine_state() = default;  // not an aggregate: CAF would build it from `self`
  static inline const char* name = "vmitap.engine";
  std::shared_ptr<drv::driver> driver;
  engine_config cfg;
  std::map<std::string, sink_handle> sinks;
  std::map<drv::domain_id, domain_supervisor_actor> supervisors;
  std::set<drv::domain_id> attached;
  std::map<drv::domain_id, drv::domain_info> infos;
  std::vector<domain_report> ended;
  bool stopping = false;
};

using engine_ptr = engine_actor::stateful_pointer<engine_state>;

void collect_detach(engine_ptr self, drv::domain_id id, std::function<void()> done = {},
                    std::string error = {}) {
  auto& st = self->state;
  auto it = st.supervisors.find(id);
  if (it == st.supervisors.end())
    return;
  auto sup = it->second;
  st.supervisors.erase(it);
  if (st.attached.erase(id) > 0)
    st.metrics->domains_monitored().Decrement();
  self->request(sup, st.cfg.stop_deadline, detach_atom::value)
    .then(
      [self, done, error](domain_report& r) {
        if (r.error.empty())
          r.error = error;
        if (!r.error.empty())
          spdlog::warn("domain {} ({}): teardown: {}", r.name, r.id, r.error);
        else
          spdlog::info("domain {} ({}) detached", r.name, r.id);
        self->state.ended.push_back(std::move(r));
        if (done)
          done();
      },
      [self, id, done](caf::error& err) {
        spdlog::error("domain {}: detach failed: {}", id, render(err));
        domain_report r;
        r.id = id;
        r.error = render(err);
        self->state.ended.push_back(std::move(r));
        if (done)
          done();
      });
}

const engine_config::domain_entry* entry_for(const engine_config& cfg,
                                            const drv::domain_info& info) {
  for (auto& e : cfg.domains)
    if (e.select.matches(info))
      return &e;
  return nullptr;
}

bool same_sink(const sink_config& a, const sink_config& b) {
  return a.type == b.type && a.path == b.path && a.rotate_bytes == b.rotate_bytes
         && a.queue_bound == b.queue_bound;
}

/// Applies `next`: new sinks first, then per domain nothing / breakpoint update / detach /
/// re-attach, then attach what the new selectors pick, then close sinks no longer wanted.
caf::result<ok_atom> reload(engine_ptr self, engine_config next) {
  auto& st = self->state;
  auto old = st.cfg;
  std::set<std::string> replaced;  // sinks whose actor changes
  for (auto& s : old.sinks) {
    auto n = std::find_if(next.sinks.begin(), next.sinks.end(),
                          [&](auto& x) { return x.name == s.name; });
    if (n == next.sinks.end() || !same_sink(*n, s))
      replaced.insert(s.name);
  }
  std::map<std::string, sink_handle> retired;
  for (auto& s : next.sinks) {
    if (st.sinks.count(s.name) && !replaced.count(s.name))
      continue;
    auto h = spawn_sink(self->system(), s, st.metrics->sink(s.name));
    if (!h)
      return std::move(h.error());  // nothing changed yet
    if (auto old_sink = st.sinks.find(s.name); old_sink != st.sinks.end())
      retired.emplace(s.name, old_sink->second);
    st.sinks[s.name] = *h;
  }
  for (auto& name : replaced)
    if (!retired.count(name) && st.sinks.count(name)) {
      retired.emplace(name, st.sinks.at(name));
      st.sinks.erase(name);
    }
  st.cfg.domains = next.domains;
  st.cfg.sinks = next.sinks;

  auto rp = self->make_response_promise<ok_atom>();
  auto finish = [self, rp, retired](caf::error err) mutable {
    for (auto& [name, h] : retired)  // no domain sends to them any more
      self->request(h.actor, defaults::request_timeout, flush_atom::value)
        .then([self, h = h](ok_atom) { self->send_exit(h.actor, caf::exit_reason::user_shutdown); },
              [](caf::error&) {});
    auto domains = self->state.driver->list_domains();
    if (domains)
      for (auto& d : *domains)
        self->send(self, started_atom::value, d);
    if (err)
      rp.deliver(err);
    else
      rp.deliver(ok_atom::value);
  };
  std::vector<drv::domain_id> ids;
  for (auto& [id, sup] : st.supervisors)
    ids.push_back(id);
  auto j = join(ids.size(), finish);
  for (auto id : ids) {
    auto info = st.infos.at(id);
    auto* before = entry_for(old, info);
    auto* after = entry_for(st.cfg, info);
    bool sinks_changed = !before || !after || before->sinks != after->sinks
                         || std::any_of(after->sinks.begin(), after->sinks.end(),
                                        [&](auto& s) { return replaced.count(s) > 0; });
    if (!after) {
      spdlog::info("reload: domain {} is no longer selected: detaching", info.name);
      collect_detach(self, id, [j] { j->report({}); });
    } else if (sinks_changed || !before->plan.same_shape(after->plan)) {
      spdlog::info("reload: domain {}: new views, step mode or sinks: re-attaching", info.name);
      collect_detach(self, id, [j] { j->report({}); });  // `finish` attaches it again
    } else if (before->plan.breakpoints != after->plan.breakpoints) {
      self->request(st.supervisors.at(id), defaults::attach_timeout, update_atom::value,
                    after->plan)
        .then([j, name = info.name](ok_atom) {
                spdlog::info("reload: domain {}: breakpoints updated", name);
                j->report({});
              },
              [j, name = info.name](caf::error& err) {
                spdlog::error("reload: domain {}: {}", name, render(err));
                j->report(err);
              });
    } else {
      j->report({});
    }
  }
  return rp;
}

engine_actor::behavior_type engine_behavior(engine_ptr self, std::shared_ptr<drv::driver> driver,
                                            engine_config cfg,
                                            std::map<std::string, sink_handle> sinks,
                                            vmitap::metrics* metrics) {
  self->state.metrics = metrics;
  self->state.driver = std::move(driver);
  self->state.cfg = std::move(cfg);
  self->state.sinks = std::move(sinks);
  return {
    [self](started_atom, const drv::domain_info& info) {
      auto& st = self->state;
      if (st.stopping || st.supervisors.count(info.id))
        return;
      auto* entry = entry_for(st.cfg, info);
      if (!entry)
        return;
      std::vector<sink_handle> sinks;
      for (auto& name : entry->sinks)
        sinks.push_back(st.sinks.at(name));
      auto sup = self->spawn(domain_supervisor, st.driver, info, entry->plan, std::move(sinks),
                             st.cfg.detached_event_sources, st.metrics->attach_domain(info));
      st.supervisors.emplace(info.id, sup);
      st.infos[info.id] = info;
      self->request(sup, defaults::attach_timeout, attach_atom::value)
        .then(
          [self, info](ok_atom) {
            self->state.metrics->domain_attach(true).Increment();
            self->state.metrics->domains_monitored().Increment();
            self->state.attached.insert(info.id);
            spdlog::info("domain {} ({}) attached: {} vcpus", info.name, info.id, info.vcpus);
          },
          [self, info](caf::error& err) {
            self->state.metrics->domain_attach(false).Increment();
            spdlog::error("domain {} ({}): attach failed: {}", info.name, info.id, render(err));
            collect_detach(self, info.id, {}, "attach: " + render(err));
          });
    },
    [self](stopped_atom, const drv::domain_info& info) {
      auto it = self->state.supervisors.find(info.id);
      if (it == self->state.supervisors.end())
        return;
      spdlog::warn("domain {} ({}) stopped while monitored", info.name, info.id);
      self->send(it->second, died_atom::value);
      collect_detach(self, info.id);
    },
    [self](status_atom) {
      auto rp = self->make_response_promise<std::vector<domain_report>>();
      auto out = std::make_shared<std::vector<domain_report>>(self->state.ended);
      // A domain that cannot answer is left out of the status; it still gets detached.
      auto j = join(self->state.supervisors.size(),
                    [rp, out](caf::error) mutable { rp.deliver(*out); });
      for (auto& [id, sup] : self->state.supervisors)
        self->request(sup, defaults::request_timeout, status_atom::value)
          .then(
            [out, j](domain_report& r) {
              out->push_back(std::move(r));
              j->report({});
            },
            [j](caf::error& err) { j->report(err); });
      return rp;
    },
    [self](reload_atom, const engine_config_ptr& next) { return reload(self, *next); },
    [self](stop_atom) {
      auto& st = self->state;
      st.stopping = true;
      auto rp = self->make_response_promise<std::vector<domain_report>>();
      auto j = join(st.supervisors.size(),
                    [self, rp](caf::error) mutable { rp.deliver(self->state.ended); });
      std::vector<drv::domain_id> ids;  // collect_detach erases from supervisors
      for (auto& [id, sup] : st.supervisors)
        ids.push_back(id);
      for (auto id : ids)
        collect_detach(self, id, [j] { j->report({}); });
      return rp;
    },
  };
}

}  // namespace

engine::engine(engine_config cfg, std::shared_ptr<drv::driver> driver)
  : cfg_(std::move(cfg)), driver_(std::move(driver)), metrics_(VMITAP_VERSION) {
  system_cfg_.set("scheduler.max-threads", cfg_.worker_threads);
  system_cfg_.set("scheduler.max-throughput", defaults::max_throughput);
  system_ = std::make_unique<caf::actor_system>(system_cfg_);
}

engine::~engine() {
  stop();
}

int engine::metrics_port() const {
  if (!exposer_)
    return 0;
  auto ports = exposer_->GetListeningPorts();
  return ports.empty() ? 0 : ports.front();
}

caf::error engine::reload(engine_config next) {
  if (!actor_ || stopped_)
    return make_error(ec::shutting_down, "reload: the engine is not running");
  caf::error result;
  caf::scoped_actor self{*system_};
  self->request(actor_, defaults::attach_timeout + cfg_.stop_deadline, reload_atom::value,
                engine_config_ptr{std::make_shared<engine_config>(std::move(next))})
    .receive([](ok_atom) {}, [&](caf::error& err) { result = std::move(err); });
  return result;
}

caf::error engine::start() {
  if (!cfg_.metrics_listen.empty()) {
    try {
      exposer_ = std::make_unique<prometheus::Exposer>(cfg_.metrics_listen);
    } catch (const std::exception& e) {
      return make_error(ec::invalid_argument,
                        "metrics listen address " + cfg_.metrics_listen + ": " + e.what());
    }
    for (auto& c : metrics_.collectables())
      exposer_->RegisterCollectable(c);
  }
  std::map<std::string, sink_handle> sinks;
  for (auto& s : cfg_.sinks) {
    auto h = spawn_sink(*system_, s, metrics_.sink(s.name));
    if (!h)
      return std::move(h.error());
    sinks.emplace(s.name, *h);
    sinks_.push_back(*h);
  }
  actor_ = system_->spawn(engine_behavior, driver_, cfg_, std::move(sinks), &metrics_);
  auto me = actor_;
  if (auto err = driver_->watch([me](const drv::domain_change& c) {
        if (c.started)
          caf::anon_send(me, started_atom::value, c.domain);
        else
          caf::anon_send(me, stopped_atom::value, c.domain);
      }))
    return err;
  auto domains = driver_->list_domains();
  if (!domains)
    return std::move(domains.error());
  for (auto& d : *domains)
    caf::anon_send(actor_, started_atom::value, d);
  return {};
}

std::vector<domain_report> engine::status() {
  std::vector<domain_report> out;
  if (!actor_ || stopped_)
    return out;
  caf::scoped_actor self{*system_};
  self->request(actor_, defaults::request_timeout, status_atom::value)
    .receive([&](std::vector<domain_report>& r) { out = std::move(r); },
             [&](caf::error& err) { spdlog::error("status: {}", render(err)); });
  return out;
}

std::vector<domain_report> engine::stop() {
  std::vector<domain_report> out;
  if (stopped_)
    return out;
  stopped_ = true;
  driver_->unwatch();
  stop_actors(out);
  // Every actor gone: their domain series are removed and no sink holds a file.
  system_->await_all_actors_done();
  return out;
}

void engine::stop_actors(std::vector<domain_report>& out) {
  caf::scoped_actor self{*system_};
  if (actor_) {
    self->request(actor_, cfg_.stop_deadline + std::chrono::seconds(1), stop_atom::value)
      .receive([&](std::vector<domain_report>& r) { out = std::move(r); },
               [&](caf::error& err) { spdlog::error("stop: {}", render(err)); });
    self->send_exit(actor_, caf::exit_reason::user_shutdown);
  }
  for (auto& s : sinks_) {
    self->request(s.actor, defaults::request_timeout, flush_atom::value)
      .receive([](ok_atom) {}, [](caf::error&) {});
    self->send_exit(s.actor, caf::exit_reason::user_shutdown);
  }
}

}  // namespace vmitap
