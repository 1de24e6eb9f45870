#include "actors/control/breakpoint_registry.hpp"

#include "actors/control/registry_steps.hpp"
#include "drivers/defaults.hpp"
#include "drivers/error.hpp"

#include <algorithm>

namespace vmitap::registry {

void finish(state::pending& req) {
  std::visit(
    [&](auto& rp) {
      using promise = std::decay_t<decltype(rp)>;
      if constexpr (std::is_same_v<promise, caf::typed_response_promise<batch_result>>) {
        rp.deliver(std::move(req.result));
      } else if constexpr (std::is_same_v<promise, std::function<void()>>) {
        rp();
      } else if (req.first_error) {
        rp.deliver(req.first_error);
      } else {
        rp.deliver(ok_atom_v);
      }
    },
    req.promise);
}

void page_settled(state::pending& req) {
  if (--req.pages_left == 0) {
    finish(req);
    if (req.then)
      req.then();
  }
}

void publish(state& st) {
  if (st.builder->changed())
    st.cfg.domain->table().publish(st.builder->build());
}

/// What the exporter lists beside the table: suppressed and pending breakpoints, and the
/// counts of virtual ones.
void publish_out_of_table(state& st) {
  std::vector<breakpoint_ptr> bps;
  for (auto& [raw, bp] : st.suppressed)
    bps.push_back(bp);
  uint32_t pending = 0;
  for (auto& [raw, v] : st.virtuals)
    if (v.bp->pending()) {
      ++pending;
      if (!st.suppressed.contains(raw))
        bps.push_back(v.bp);
    }
  st.cfg.domain->publish_out_of_table(std::move(bps));
  auto& c = st.cfg.domain->counters();
  c.pending.store(pending, std::memory_order_relaxed);
  c.watched_tables.store(uint32_t(st.watches.size()), std::memory_order_relaxed);
}

/// The rights the page should lack: Execute while it has breakpoints, Write while it is a
/// watched page table.
page_access wanted(const state& st, const state::page& p) {
  auto deny = st.builder->find(p.view, p.gfn).empty() ? page_access::none : page_access::x;
  if (st.watches.contains(p.gfn))
    deny = deny | page_access::w;
  return deny;
}

bool armed(const state::page& p) {
  return denies(p.denied, page_access::x);
}

void forget(state& st, const breakpoint* bp) {
  if (st.by_name.find(bp->name) == bp)
    st.by_name.erase(bp);
  st.builder->remove(bp);  // the last reference may go here: `bp` is not used after
}

/// A breakpoint that could not be armed or watched goes again, a virtual one with its watch
/// (later: touching its table now would change the pages being iterated).
void forget_failed(state& st, const breakpoint_ptr& bp) {
  if (st.virtuals.contains(bp.get()))
    st.failed_virtuals.push_back(bp);
  forget(st, bp.get());
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
  auto want = wanted(st, p);
  for (auto& w : p.waiters) {
    bool settled = false;
    switch (w.kind) {
      case state::wait_kind::add:
        if (armed(p) || (!p.in_flight && (err || !denies(want, page_access::x)))) {
          settled = true;
          for (auto& bp : w.added) {
            if (!st.builder->contains(bp.get())) {
              w.request->result.failed.emplace_back(
                bp->name, make_error(ec::breakpoint_not_found, "removed before it was armed"));
            } else if (armed(p)) {
              ++w.request->result.ok;
            } else {
              w.request->result.failed.emplace_back(bp->name, err);
              w.request->result.domain_gone |= domain_gone(err);
              forget_failed(st, bp);  // never armed: it goes again
            }
          }
        }
        break;
      case state::wait_kind::remove:
      case state::wait_kind::clear:
        if ((!armed(p) || denies(want, page_access::x)) &&
            (w.kind == state::wait_kind::remove || p.denied == want)) {
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
      case state::wait_kind::settle:
        if (!p.in_flight && (p.denied == want || err || p.failed)) {
          settled = true;
          // Pending breakpoints counted as added: one whose table a view could not watch
          // would never arm, so it fails (once, whichever view failed).
          for (auto& bp : w.added)
            if ((err || p.failed) && st.by_name.find(bp->name) == bp.get()) {
              --w.request->result.ok;
              w.request->result.failed.emplace_back(
                bp->name, err ? err : make_error(ec::invalid_argument, "watching its page table"));
              w.request->result.domain_gone |= domain_gone(err);
              forget_failed(st, bp);
            }
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
  if (p.denied == page_access::none && !p.in_flight && p.waiters.empty() &&
      wanted(st, p) == page_access::none)
    st.pages.erase(it);
}

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
      p.denied = p.sent;
    p.failed = bool(err);
    resolve_waiters(st, p, err);
    if (!p.failed)
      st.unsettled.insert(keys[i]);
    drop_if_idle(st, it);
  }
  drop_failed_virtuals(st);
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
    auto want = wanted(st, p);
    if (p.in_flight || p.failed || want == p.denied) {
      if (!p.in_flight)
        resolve_waiters(st, p, {});
      drop_if_idle(st, it);
      continue;
    }
    p.in_flight = true;
    p.sent = want;
    changes.push_back({p.view, p.gfn, want});
    keys.push_back(key);
  }
  st.unsettled.clear();
  if (!st.failed_virtuals.empty()) {
    drop_failed_virtuals(st);  // touches their tables: settled by the next batch
    if (changes.empty())
      return send_batch(self);
  }
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
  std::map<drv::gfn_t, std::vector<breakpoint_ptr>> per_table;  // newly watched tables
  std::unique_ptr<drv::page_walker> walker;
  for (auto def : defs) {
    virtual_place at;
    bool walked = def.target.by != breakpoint_target::kind::physical;
    if (walked) {
      at = place(st, walker, def.target.va);
      if (at.error) {
        req->result.failed.emplace_back(def.name(), std::move(at.error));
        continue;
      }
      def.target.pa = at.pa;
    }
    auto view = validate(st, def);
    if (!view) {
      req->result.failed.emplace_back(def.name(), view.error());
      continue;
    }
    auto bp = make_breakpoint(def, *view, when, intern(st, def.options.tags));
    st.by_name.insert(bp.get());
    if (walked) {
      st.virtuals[bp.get()] = {bp, def.target.va, at};
      bool fresh = at.watched && watch(st, at.table);
      if (at.pa == 0) {
        // Pending: added, unless its page table cannot be watched.
        ++req->result.ok;
        per_table[at.table].push_back(bp);
        continue;
      }
      if (fresh)
        per_table[at.table];
    }
    st.builder->add(bp);
    per_page[page_key(bp->view, drv::gfn_of(bp->pa()))].push_back(std::move(bp));
  }
  if (!per_table.empty())
    publish_watches(st);
  for (auto& [gfn, bps] : per_table)
    touch_table(st, gfn, req, bps);
  for (auto& [key, bps] : per_page) {
    auto& p = touch(st, bps.front()->view, drv::gfn_of(bps.front()->pa()));
    if (armed(p) && !p.in_flight) {
      req->result.ok += bps.size();  // armed the moment the table is published
      continue;
    }
    ++req->pages_left;
    p.waiters.push_back({req, state::wait_kind::add, std::move(bps)});
  }
  publish_out_of_table(st);
  bool delegated = req->pages_left > 0;  // answered when its pages settle
  if (delegated) {
    req->promise = self->make_response_promise<batch_result>();
    // The tables were read before they were watched: a write in between went unseen, so
    // each is walked again once watched.
    if (!per_table.empty())
      req->then = [self, tables = std::move(per_table)] {
        for (auto& entry : tables)
          self->send(self, walk_atom_v, table_write{entry.first, 0, false, 0, 0, {}});
      };
  }
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
    breakpoint_ptr hold;  // a pending one lives in `virtuals` only
    if (auto v = st.virtuals.find(bp); v != st.virtuals.end())
      hold = v->second.bp;
    drop_virtual(st, bp);
    if (auto s = st.suppressed.find(bp); s != st.suppressed.end()) {
      req->result.removed.push_back(count_of(*s->second));
      st.by_name.erase(bp);  // out of the table already, its page settled without it
      st.suppressed.erase(s);
      publish_out_of_table(st);
      ++req->result.ok;
      continue;
    }
    if (bp->pending()) {
      req->result.removed.push_back(count_of(*bp));
      st.by_name.erase(bp);  // in no table: nothing to restore
      ++req->result.ok;
      continue;
    }
    auto view = bp->view;
    auto gfn = drv::gfn_of(bp->pa());
    for (auto& e : st.builder->find(view, gfn))
      if (e.bp.get() == bp)
        req->result.removed.push_back(count_of(*e.bp));  // the report keeps its hits
    forget(st, bp);  // from the next table on, its events are stale
    auto& p = touch(st, view, gfn);
    ++req->result.ok;
    if (!denies(wanted(st, p), page_access::x) && (armed(p) || p.in_flight))
      emptied.insert(page_key(p.view, p.gfn));
  }
  for (auto key : emptied) {
    ++req->pages_left;
    st.pages[key].waiters.push_back({req, state::wait_kind::remove, {}});
  }
  publish_out_of_table(st);
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
  st.virtuals.clear();
  st.watches.clear();
  publish_watches(st);
  publish_out_of_table(st);
  std::vector<uint64_t> busy;
  for (auto& [key, p] : st.pages) {
    p.failed = false;  // one more try for pages whose restore failed before
    st.unsettled.insert(key);
    if (p.denied != page_access::none || p.in_flight)
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
  // path saw it go over its limit, nor one its page went from since.
  if (!bp->limiter() || st.by_name.find(bp->name) != bp.get() || st.suppressed.count(bp.get()) ||
      !st.builder->contains(bp.get()))
    return;
  st.suppressed.emplace(bp.get(), bp);
  st.builder->remove(bp.get());
  touch(st, bp->view, drv::gfn_of(bp->pa()));
  bp->limiter()->count_suppression();
  publish_out_of_table(st);
  send_batch(self);  // publishes first: its traps from now on are stale, then the page goes
  self->delayed_send(self, bp->limiter()->limit().cooldown, rearm_atom_v, bp);
}

void rearm(state_ptr self, const breakpoint_ptr& bp) {
  auto& st = self->state;
  auto s = st.suppressed.find(bp.get());
  if (s == st.suppressed.end())
    return;  // removed (or the registry cleared) during its cool-down
  st.suppressed.erase(s);
  bp->limiter()->rearmed();
  if (!bp->pending()) {  // a virtual one whose page went meanwhile is armed when it is back
    st.builder->add(bp);
    touch(st, bp->view, drv::gfn_of(bp->pa()));
  }
  send_batch(self);  // publishes the table with it before its page is monitored again
  publish_out_of_table(st);
}

}  // namespace vmitap::registry

namespace vmitap {

using namespace registry;

breakpoint_registry_impl::behavior_type breakpoint_registry(state_ptr self,
                                                            breakpoint_registry_config cfg) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  std::vector<drv::view_id> ids;
  for (auto& [name, id] : st.cfg.views)
    ids.push_back(id);
  st.builder = std::make_unique<table_builder>(std::move(ids));
  st.cr3 = st.cfg.kernel_cr3;
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
      for (auto& [raw, v] : self->state.virtuals)
        if (v.bp->pending() && !self->state.suppressed.contains(raw))
          out.push_back(v.bp);
      return out;
    },
    [self](suppress_atom, const breakpoint_ptr& bp) { suppress(self, bp); },
    [self](rearm_atom, const breakpoint_ptr& bp) { rearm(self, bp); },
    [self](walk_atom, const table_write& w) { walk(self, w); },
    [self](tables_atom, uint64_t cr3) { self->state.cr3 = cr3; },
  };
}

}  // namespace vmitap
