#include "actors/breakpoint_registry.hpp"

#include "engine/defaults.hpp"
#include "engine/error.hpp"

#include <algorithm>

namespace vmitap {

namespace {

using state_ptr = breakpoint_registry_actor::stateful_pointer<breakpoint_registry_state>;
using phase = breakpoint_registry_state::phase;

/// Sends the VCPU actors a new table. Called before any access change is requested, so a
/// VCPU always knows a page before the guest can trap on it.
void publish(state_ptr self) {
  auto& st = self->state;
  auto table = std::make_shared<breakpoint_table>();
  table->version = ++st.version;
  table->views = st.views;
  std::map<drv::view_id, size_t> per_view;
  for (auto& [key, p] : st.pages) {
    table->pages.emplace(key, p.breakpoints);
    per_view[p.view] += p.breakpoints.size();
  }
  for (auto view : st.views)
    st.metrics->breakpoints(view).Set(double(per_view[view]));
  table_ptr snapshot = std::move(table);
  for (auto& v : st.vcpus)
    self->send(v, snapshot_atom::value, snapshot);
}

void request_change(state_ptr self, uint64_t key, bool monitor);

/// Answers `clear` once no page is between states and none is left.
void finish_clear(state_ptr self) {
  auto& st = self->state;
  if (st.clearing.empty())
    return;
  for (auto& [key, p] : st.pages)
    if (p.state != phase::monitored)
      return;
  auto promises = std::move(st.clearing);
  st.clearing.clear();
  caf::error err = std::move(st.clear_error);
  if (!err && !st.pages.empty())
    err = make_error(ec::driver_call_failed,
                     std::to_string(st.pages.size()) + " pages could not be restored");
  for (auto& rp : promises) {
    if (err)
      rp.deliver(err);
    else
      rp.deliver(ok_atom::value);
  }
}

void on_monitored(state_ptr self, uint64_t key, caf::error err) {
  auto& st = self->state;
  auto& p = st.pages.at(key);
  auto adding = std::move(p.adding);
  auto ids = std::move(p.adding_ids);
  p.adding.clear();
  p.adding_ids.clear();
  if (err) {
    // The page never lost Execute: its breakpoints are not armed, so they go again.
    for (auto& bp : p.breakpoints)
      st.by_id.erase(bp->id);
    st.pages.erase(key);
    publish(self);
    for (auto& rp : adding)
      rp.deliver(err);
    finish_clear(self);
    return;
  }
  p.state = phase::monitored;
  for (size_t i = 0; i < adding.size(); ++i)
    adding[i].deliver(ids[i]);
  if (p.breakpoints.empty())  // all removed while the change was in flight
    request_change(self, key, false);
  finish_clear(self);
}

void on_restored(state_ptr self, uint64_t key, caf::error err) {
  auto& st = self->state;
  auto& p = st.pages.at(key);
  auto removing = std::move(p.removing);
  p.removing.clear();
  if (err) {
    p.state = phase::monitored;  // the guest still has Execute removed; say so
    if (!st.clear_error)
      st.clear_error = err;
    for (auto& rp : removing)
      rp.deliver(err);
  } else if (p.breakpoints.empty()) {
    st.pages.erase(key);
    publish(self);
    for (auto& rp : removing)
      rp.deliver(ok_atom::value);
  } else {
    for (auto& rp : removing)  // re-added meanwhile: monitor it again
      rp.deliver(ok_atom::value);
    request_change(self, key, true);
  }
  finish_clear(self);
}

void request_change(state_ptr self, uint64_t key, bool monitor) {
  auto& p = self->state.pages.at(key);
  p.state = monitor ? phase::applying : phase::restoring;
  auto handle = [self, key, monitor](caf::error err) {
    if (monitor)
      on_monitored(self, key, std::move(err));
    else
      on_restored(self, key, std::move(err));
  };
  auto req = monitor ? self->request(self->state.controller, defaults::access_change_timeout,
                                     monitor_atom::value, p.view, p.gfn)
                     : self->request(self->state.controller, defaults::access_change_timeout,
                                     restore_atom::value, p.view, p.gfn);
  req.then([handle](ok_atom) { handle({}); }, [handle](caf::error& err) { handle(err); });
}

/// Drops one breakpoint; when it was its page's last, answers once the page is restored.
caf::result<ok_atom> remove_one(state_ptr self, uint64_t id) {
  auto& st = self->state;
  auto it = st.by_id.find(id);
  if (it == st.by_id.end())
    return make_error(ec::breakpoint_not_found, "no breakpoint " + std::to_string(id));
  auto bp = it->second;
  st.by_id.erase(it);
  auto key = page_key(bp->spec.view, drv::gfn_of(bp->spec.pa));
  auto& p = st.pages.at(key);
  std::erase(p.breakpoints, bp);
  publish(self);  // from here on, its events are stale
  if (!p.breakpoints.empty() || p.state == phase::applying)
    return ok_atom::value;
  auto rp = self->make_response_promise<ok_atom>();
  p.removing.push_back(rp);
  if (p.state == phase::monitored)
    request_change(self, key, false);
  return rp;
}

}  // namespace

breakpoint_registry_actor::behavior_type
breakpoint_registry(state_ptr self, ept_controller_actor controller, std::vector<vcpu_actor> vcpus,
                    std::vector<drv::view_id> views, drv::gfn_t max_gfn,
                    std::shared_ptr<domain_metrics> metrics) {
  auto& st = self->state;
  st.metrics = std::move(metrics);
  st.controller = std::move(controller);
  st.vcpus = std::move(vcpus);
  st.views = std::move(views);
  st.max_gfn = max_gfn;
  publish(self);
  return {
    [self](add_atom, breakpoint_spec& spec) -> caf::result<uint64_t> {
      auto& st = self->state;
      if (std::find(st.views.begin(), st.views.end(), spec.view) == st.views.end())
        return make_error(ec::no_such_view, "breakpoint " + spec.name + ": view "
                                              + std::to_string(spec.view) + " is not monitored");
      if (drv::gfn_of(spec.pa) > st.max_gfn)
        return make_error(ec::gfn_out_of_range, "breakpoint " + spec.name + ": address beyond "
                                                  "guest memory");
      for (auto& [id, bp] : st.by_id)
        if (bp->spec.name == spec.name)
          return make_error(ec::duplicate_breakpoint, "breakpoint " + spec.name + " exists");
      auto bp = std::make_shared<breakpoint>();
      bp->id = st.next_id++;
      bp->spec = std::move(spec);
      bp->hits_metric = &st.metrics->hits(bp->spec.view, bp->spec.name);
      auto key = page_key(bp->spec.view, drv::gfn_of(bp->spec.pa));
      auto [it, fresh] = st.pages.try_emplace(key);
      auto& p = it->second;
      p.view = bp->spec.view;
      p.gfn = drv::gfn_of(bp->spec.pa);
      p.breakpoints.push_back(bp);
      st.by_id.emplace(bp->id, bp);
      publish(self);
      if (!fresh && p.state == phase::monitored)
        return bp->id;
      auto rp = self->make_response_promise<uint64_t>();
      p.adding.push_back(rp);
      p.adding_ids.push_back(bp->id);
      if (fresh)
        request_change(self, key, true);
      return rp;
    },
    [self](remove_atom, uint64_t id) { return remove_one(self, id); },
    [self](clear_atom) -> caf::result<ok_atom> {
      auto& st = self->state;
      auto rp = self->make_response_promise<ok_atom>();
      st.clearing.push_back(rp);
      st.by_id.clear();
      for (auto& [key, p] : st.pages)
        p.breakpoints.clear();
      publish(self);
      for (auto& [key, p] : st.pages)
        if (p.state == phase::monitored)
          request_change(self, key, false);
      finish_clear(self);
      return rp;
    },
    [self](list_atom) {
      std::vector<breakpoint_ptr> out;
      for (auto& [id, bp] : self->state.by_id)
        out.push_back(bp);
      return out;
    },
  };
}

}  // namespace vmitap
