#include "actors/breakpoint_registry.hpp"

#include "drivers/defaults.hpp"
#include "drivers/error.hpp"

#include <algorithm>

namespace vmitap {

namespace {

using state_ptr = breakpoint_registry_actor::stateful_pointer<breakpoint_registry_state>;
using state = breakpoint_registry_state;

void finish(state::pending& req) {
  std::visit(
    [&](auto& rp) {
      using promise = std::decay_t<decltype(rp)>;
      if constexpr (std::is_same_v<promise, caf::typed_response_promise<batch_result>>) {
        rp.deliver(std::move(req.result));
      } else if (req.first_error) {
        rp.deliver(req.first_error);
      } else {
        rp.deliver(ok_atom::value);
      }
    },
    req.promise);
}

void page_settled(state::pending& req) {
  if (--req.pages_left == 0)
    finish(req);
}

void set_table_page(state& st, const state::page& p) {
  st.builder->set_page(p.view, p.gfn, p.breakpoints);
  st.table_changed = true;
}

void publish(state& st) {
  if (std::exchange(st.table_changed, false))
    st.cfg.domain->table().publish(st.builder->build());
}

bool holds(const state::page& p, const breakpoint_ptr& bp) {
  return std::find(p.breakpoints.begin(), p.breakpoints.end(), bp) != p.breakpoints.end();
}

/// Answers the waiters a page's state satisfies; `err` is why its last change failed.
void resolve_waiters(state& st, state::page& p, const caf::error& err) {
  std::vector<state::waiter> keep;
  for (auto& w : p.waiters) {
    bool settled = false;
    switch (w.kind) {
      case state::wait_kind::add:
        if (p.monitored || (!p.in_flight && (err || p.breakpoints.empty()))) {
          settled = true;
          for (auto& bp : w.added) {
            if (p.monitored && holds(p, bp)) {
              ++w.request->result.ok;
            } else if (!holds(p, bp)) {
              w.request->result.failed.emplace_back(bp->spec.name, "removed before it was armed");
            } else {
              w.request->result.failed.emplace_back(bp->spec.name, render(err));
              std::erase(p.breakpoints, bp);  // never armed: it goes again
              if (auto i = st.by_name.find(bp->spec.name); i != st.by_name.end() && i->second == bp)
                st.by_name.erase(i);
              set_table_page(st, p);
            }
          }
        }
        break;
      case state::wait_kind::remove:
      case state::wait_kind::clear:
        if (!p.monitored || !p.breakpoints.empty()) {
          settled = true;  // restored, or wanted again by a newer add: removal done
        } else if (!p.in_flight && err) {
          settled = true;
          if (w.kind == state::wait_kind::remove)
            w.request->result.failed.emplace_back("page " + std::to_string(p.gfn),
                                                  "restore failed: " + render(err));
          else if (!w.request->first_error)
            w.request->first_error = make_error(
              code_of(err) == ec::none ? ec::driver_call_failed : code_of(err),
              "page " + std::to_string(p.gfn) + " of view " + std::to_string(p.view)
                + " could not be restored: " + context_of(err));
        }
        break;
    }
    if (settled)
      page_settled(*w.request);
    else
      keep.push_back(std::move(w));
  }
  p.waiters = std::move(keep);
}

void send_batch(state_ptr self);

void on_results(state_ptr self, std::vector<uint64_t> keys, const change_results& results) {
  auto& st = self->state;
  st.batch_in_flight = false;
  for (size_t i = 0; i < keys.size(); ++i) {
    auto it = st.pages.find(keys[i]);
    if (it == st.pages.end())
      continue;
    auto& p = it->second;
    p.in_flight = false;
    const auto& err = results[i];
    if (!err)
      p.monitored = !p.monitored;  // each change flips the confirmed state
    p.failed = bool(err);
    resolve_waiters(st, p, err);
    if (p.breakpoints.empty() && !p.monitored && p.waiters.empty())
      st.pages.erase(it);
    else if (!p.failed)
      st.unsettled.insert(keys[i]);
  }
  publish(st);
  send_batch(self);
}

/// Sends every page whose wanted and confirmed states differ, as one batch.
void send_batch(state_ptr self) {
  auto& st = self->state;
  if (st.batch_in_flight)
    return;  // its answer sends the next batch: changes pile up into one
  page_changes changes;
  std::vector<uint64_t> keys;
  for (auto key : st.unsettled) {
    auto it = st.pages.find(key);
    if (it == st.pages.end())
      continue;
    auto& p = it->second;
    bool wanted = !p.breakpoints.empty();
    if (p.in_flight || p.failed || wanted == p.monitored) {
      if (!p.in_flight)
        resolve_waiters(st, p, {});
      if (!wanted && !p.monitored && !p.in_flight && p.waiters.empty())
        st.pages.erase(it);
      continue;
    }
    p.in_flight = true;
    changes.push_back({p.view, p.gfn, wanted});
    keys.push_back(key);
  }
  st.unsettled.clear();
  publish(st);  // before any access changes: no VCPU traps on a page it does not know
  if (changes.empty())
    return;
  st.batch_in_flight = true;
  self->request(st.cfg.controller, defaults::access_change_timeout, apply_atom::value, changes)
    .then([self, keys](const change_results& results) { on_results(self, keys, results); },
          [self, keys](caf::error& err) {
            on_results(self, keys, change_results(keys.size(), err));
          });
}

/// Touches a page: it must be settled again, and whoever waits on it is told when it is.
state::page& touch(state& st, drv::view_id view, drv::gfn_t gfn) {
  auto key = page_key(view, gfn);
  auto& p = st.pages[key];
  p.view = view;
  p.gfn = gfn;
  p.failed = false;
  st.unsettled.insert(key);
  return p;
}

caf::error validate(const state& st, const breakpoint_spec& spec) {
  if (std::find(st.cfg.views.begin(), st.cfg.views.end(), spec.view) == st.cfg.views.end())
    return make_error(ec::no_such_view, "view " + std::to_string(spec.view) + " is not monitored");
  if (drv::gfn_of(spec.pa) > st.cfg.max_gfn)
    return make_error(ec::gfn_out_of_range, "address beyond guest memory");
  if (st.by_name.contains(spec.name))
    return make_error(ec::duplicate_breakpoint, "a breakpoint of that name exists");
  return {};
}

caf::result<batch_result> add(state_ptr self, std::vector<breakpoint_spec>& specs) {
  auto& st = self->state;
  auto req = std::make_shared<state::pending>();
  std::map<uint64_t, std::vector<breakpoint_ptr>> per_page;
  for (auto& spec : specs) {
    if (auto err = validate(st, spec)) {
      req->result.failed.emplace_back(spec.name, render(err));
      continue;
    }
    auto bp = std::make_shared<breakpoint>();
    bp->id = st.next_id++;
    bp->spec = std::move(spec);
    st.by_name.emplace(bp->spec.name, bp);
    per_page[page_key(bp->spec.view, drv::gfn_of(bp->spec.pa))].push_back(std::move(bp));
  }
  for (auto& [key, bps] : per_page) {
    auto& p = touch(st, bps.front()->spec.view, drv::gfn_of(bps.front()->spec.pa));
    p.breakpoints.insert(p.breakpoints.end(), bps.begin(), bps.end());
    set_table_page(st, p);
    if (p.monitored && !p.in_flight) {
      req->result.ok += bps.size();  // armed the moment the table is published
      continue;
    }
    ++req->pages_left;
    p.waiters.push_back({req, state::wait_kind::add, std::move(bps)});
  }
  bool delegated = req->pages_left > 0;  // answered when its pages settle
  if (delegated)
    req->promise = self->make_response_promise<batch_result>();
  send_batch(self);  // publishes first
  if (!delegated)
    return std::move(req->result);
  return std::get<caf::typed_response_promise<batch_result>>(req->promise);
}

caf::result<batch_result> remove(state_ptr self, const std::vector<std::string>& names) {
  auto& st = self->state;
  auto req = std::make_shared<state::pending>();
  std::set<uint64_t> emptied;
  for (auto& name : names) {
    auto it = st.by_name.find(name);
    if (it == st.by_name.end()) {
      req->result.failed.emplace_back(name, "no such breakpoint");
      continue;
    }
    auto bp = it->second;
    st.by_name.erase(it);
    auto& p = touch(st, bp->spec.view, drv::gfn_of(bp->spec.pa));
    std::erase(p.breakpoints, bp);
    set_table_page(st, p);  // from here on its events are stale
    ++req->result.ok;
    if (p.breakpoints.empty() && (p.monitored || p.in_flight))
      emptied.insert(page_key(p.view, p.gfn));
  }
  for (auto key : emptied) {
    ++req->pages_left;
    st.pages[key].waiters.push_back({req, state::wait_kind::remove, {}});
  }
  bool delegated = req->pages_left > 0;  // answered when its pages settle
  if (delegated)
    req->promise = self->make_response_promise<batch_result>();
  send_batch(self);  // publishes first; settles (and drops) pages never monitored
  if (!delegated)
    return std::move(req->result);
  return std::get<caf::typed_response_promise<batch_result>>(req->promise);
}

caf::result<ok_atom> clear(state_ptr self) {
  auto& st = self->state;
  auto req = std::make_shared<state::pending>();
  st.by_name.clear();
  std::vector<uint64_t> busy;
  for (auto& [key, p] : st.pages) {
    p.breakpoints.clear();
    p.failed = false;  // one more try for pages whose restore failed before
    set_table_page(st, p);
    st.unsettled.insert(key);
    if (p.monitored || p.in_flight)
      busy.push_back(key);
  }
  if (!busy.empty()) {
    req->promise = self->make_response_promise<ok_atom>();
    req->pages_left = busy.size();
    for (auto key : busy)
      st.pages[key].waiters.push_back({req, state::wait_kind::clear, {}});
  }
  send_batch(self);
  if (busy.empty())
    return ok_atom::value;
  return std::get<caf::typed_response_promise<ok_atom>>(req->promise);
}

}  // namespace

breakpoint_registry_actor::behavior_type
breakpoint_registry(state_ptr self, breakpoint_registry_config cfg) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  st.builder = std::make_unique<table_builder>(st.cfg.views);
  st.table_changed = true;
  publish(st);  // the views are known before any page is
  return {
    [self](add_atom, std::vector<breakpoint_spec>& specs) { return add(self, specs); },
    [self](remove_atom, const std::vector<std::string>& names) { return remove(self, names); },
    [self](clear_atom) { return clear(self); },
    [self](list_atom) {
      std::vector<breakpoint_ptr> out;
      out.reserve(self->state.by_name.size());
      for (auto& [name, bp] : self->state.by_name)
        out.push_back(bp);
      return out;
    },
  };
}

}  // namespace vmitap
