#include "actors/control/breakpoint_registry.hpp"

#include "drivers/defaults.hpp"
#include "drivers/error.hpp"

#include <algorithm>

namespace vmitap {

namespace {

using state_ptr = breakpoint_registry_impl::stateful_pointer<breakpoint_registry_state>;
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
        rp.deliver(ok_atom_v);
      }
    },
    req.promise);
}

void page_settled(state::pending& req) {
  if (--req.pages_left == 0)
    finish(req);
}

void publish(state& st) {
  if (st.builder->changed())
    st.cfg.domain->table().publish(st.builder->build());
}

void publish_suppressed(state& st) {
  std::vector<breakpoint_ptr> bps;
  for (auto& [raw, bp] : st.suppressed)
    bps.push_back(bp);
  st.cfg.domain->publish_suppressed(std::move(bps));
}

/// The page should be monitored: it has breakpoints.
bool wanted(const state& st, const state::page& p) {
  return !st.builder->find(p.view, p.gfn).empty();
}

void forget(state& st, const breakpoint* bp) {
  if (st.by_name.find(bp->name) == bp)
    st.by_name.erase(bp);
  st.builder->remove(bp);  // the last reference may go here: `bp` is not used after
}

tag_list intern(state& st, const std::vector<std::string>& tags) {
  if (tags.empty())
    return nullptr;
  auto& shared = st.tags[tags];
  if (!shared)
    shared = std::make_shared<const std::vector<std::string>>(tags);
  return shared;
}

/// Answers the waiters a page's state satisfies; `err` is why its last change failed.
void resolve_waiters(state& st, state::page& p, const caf::error& err) {
  std::vector<state::waiter> keep;
  for (auto& w : p.waiters) {
    bool settled = false;
    switch (w.kind) {
      case state::wait_kind::add:
        if (p.monitored || (!p.in_flight && (err || !wanted(st, p)))) {
          settled = true;
          for (auto& bp : w.added) {
            if (!st.builder->contains(bp.get())) {
              w.request->result.failed.emplace_back(
                bp->name, make_error(ec::breakpoint_not_found, "removed before it was armed"));
            } else if (p.monitored) {
              ++w.request->result.ok;
            } else {
              w.request->result.failed.emplace_back(bp->name, err);
              w.request->result.domain_gone |= domain_gone(err);
              forget(st, bp.get());  // never armed: it goes again
            }
          }
        }
        break;
      case state::wait_kind::remove:
      case state::wait_kind::clear:
        if (!p.monitored || wanted(st, p)) {
          settled = true;  // restored, or wanted again by a newer add: removal done
        } else if (!p.in_flight && err) {
          settled = true;
          if (w.kind == state::wait_kind::remove)
            w.request->result.failed.emplace_back("restoring page " + std::to_string(p.gfn), err);
          else if (!w.request->first_error)
            // Ours say which page; a CAF error (a request's timeout) stays what it is.
            w.request->first_error =
              code_of(err) == ec::none
                ? err
                : make_error(code_of(err), "page " + std::to_string(p.gfn) + " of view " +
                                             std::to_string(p.view) +
                                             " could not be restored: " + context_of(err));
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

/// A page no longer monitored, wanted or waited on needs no state.
void drop_if_idle(state& st, std::unordered_map<uint64_t, state::page>::iterator it) {
  auto& p = it->second;
  if (!p.monitored && !p.in_flight && p.waiters.empty() && !wanted(st, p))
    st.pages.erase(it);
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
    if (!p.failed)
      st.unsettled.insert(keys[i]);
    drop_if_idle(st, it);
  }
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
    bool want = wanted(st, p);
    if (p.in_flight || p.failed || want == p.monitored) {
      if (!p.in_flight)
        resolve_waiters(st, p, {});
      drop_if_idle(st, it);
      continue;
    }
    p.in_flight = true;
    changes.push_back({p.view, p.gfn, want});
    keys.push_back(key);
  }
  st.unsettled.clear();
  publish(st);  // before any access changes: no VCPU traps on a page it does not know
  if (changes.empty())
    return;
  st.batch_in_flight = true;
  self->request(st.cfg.controller, defaults::access_change_timeout, apply_atom_v, changes)
    .then(
      [self, keys](const change_results& results) { on_results(self, keys, results); },
      [self, keys](caf::error& err) { on_results(self, keys, change_results(keys.size(), err)); });
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

/// The view `def` is armed in, or why it cannot be armed.
caf::expected<drv::view_id> validate(const state& st, const breakpoint_def& def) {
  auto view = st.cfg.views.find(def.options.view);
  if (view == st.cfg.views.end())
    return make_error(ec::no_such_view, "view \"" + def.options.view + "\" is not monitored");
  if (drv::gfn_of(def.target.pa) > st.cfg.max_gfn)
    return make_error(ec::gfn_out_of_range, "address beyond guest memory");
  if (st.by_name.find(def.name()))
    return make_error(ec::duplicate_breakpoint, "a breakpoint of that name exists");
  return view->second;
}

caf::result<batch_result> add(state_ptr self, const std::vector<breakpoint_def>& defs,
                              armed_by when) {
  auto& st = self->state;
  auto req = std::make_shared<state::pending>();
  std::map<uint64_t, std::vector<breakpoint_ptr>> per_page;
  for (auto& def : defs) {
    auto view = validate(st, def);
    if (!view) {
      req->result.failed.emplace_back(def.name(), view.error());
      continue;
    }
    auto bp = make_breakpoint(def, *view, when, intern(st, def.options.tags));
    st.by_name.insert(bp.get());
    st.builder->add(bp);
    per_page[page_key(bp->view, drv::gfn_of(bp->pa))].push_back(std::move(bp));
  }
  for (auto& [key, bps] : per_page) {
    auto& p = touch(st, bps.front()->view, drv::gfn_of(bps.front()->pa));
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
    auto* bp = st.by_name.find(name);
    if (!bp) {
      req->result.failed.emplace_back(name, make_error(ec::breakpoint_not_found));
      continue;
    }
    if (auto s = st.suppressed.find(bp); s != st.suppressed.end()) {
      req->result.removed.push_back(count_of(*s->second));
      st.by_name.erase(bp);  // out of the table already, its page settled without it
      st.suppressed.erase(s);
      publish_suppressed(st);
      ++req->result.ok;
      continue;
    }
    auto view = bp->view;
    auto gfn = drv::gfn_of(bp->pa);
    for (auto& e : st.builder->find(view, gfn))
      if (e.bp.get() == bp)
        req->result.removed.push_back(count_of(*e.bp));  // the report keeps its hits
    forget(st, bp);  // from the next table on, its events are stale
    auto& p = touch(st, view, gfn);
    ++req->result.ok;
    if (!wanted(st, p) && (p.monitored || p.in_flight))
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
  st.builder->clear();
  st.suppressed.clear();  // their cool-downs end in nothing
  publish_suppressed(st);
  std::vector<uint64_t> busy;
  for (auto& [key, p] : st.pages) {
    p.failed = false;  // one more try for pages whose restore failed before
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
    return ok_atom_v;
  return std::get<caf::typed_response_promise<ok_atom>>(req->promise);
}

void suppress(state_ptr self, const breakpoint_ptr& bp) {
  auto& st = self->state;
  // Only the breakpoint armed under its name now: not one removed or replaced since the hot
  // path saw it go over its limit.
  if (!bp->limiter() || st.by_name.find(bp->name) != bp.get() || st.suppressed.count(bp.get()))
    return;
  st.suppressed.emplace(bp.get(), bp);
  st.builder->remove(bp.get());
  touch(st, bp->view, drv::gfn_of(bp->pa));
  bp->limiter()->count_suppression();
  publish_suppressed(st);
  send_batch(self);  // publishes first: its traps from now on are stale, then the page goes
  self->delayed_send(self, bp->limiter()->limit().cooldown, rearm_atom_v, bp);
}

void rearm(state_ptr self, const breakpoint_ptr& bp) {
  auto& st = self->state;
  auto s = st.suppressed.find(bp.get());
  if (s == st.suppressed.end())
    return;  // removed (or the registry cleared) during its cool-down
  st.suppressed.erase(s);
  st.builder->add(bp);
  touch(st, bp->view, drv::gfn_of(bp->pa));
  bp->limiter()->rearmed();
  send_batch(self);  // publishes the table with it before its page is monitored again
  publish_suppressed(st);
}

}  // namespace

breakpoint_registry_impl::behavior_type breakpoint_registry(state_ptr self,
                                                            breakpoint_registry_config cfg) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  std::vector<drv::view_id> ids;
  for (auto& [name, id] : st.cfg.views)
    ids.push_back(id);
  st.builder = std::make_unique<table_builder>(std::move(ids));
  st.cfg.domain->table().publish(st.builder->build());  // the views, before any page
  return {
    [self](add_atom, const std::vector<breakpoint_def>& defs, armed_by when) {
      return add(self, defs, when);
    },
    [self](remove_atom, const std::vector<std::string>& names) { return remove(self, names); },
    [self](clear_atom) { return clear(self); },
    [self](list_atom) {
      std::vector<breakpoint_ptr> out;
      out.reserve(self->state.by_name.size());
      self->state.builder->for_each([&](const breakpoint_ptr& bp) { out.push_back(bp); });
      for (auto& [raw, bp] : self->state.suppressed)
        out.push_back(bp);
      return out;
    },
    [self](suppress_atom, const breakpoint_ptr& bp) { suppress(self, bp); },
    [self](rearm_atom, const breakpoint_ptr& bp) { rearm(self, bp); },
  };
}

}  // namespace vmitap
