#include "actors/ept_controller.hpp"

#include "engine/error.hpp"

#include <algorithm>

namespace vmitap {

using drv::page_access;

namespace {

struct planned {
  drv::gfn_t gfn;
  page_access target;
  page_access before;       // access before monitoring (for a monitor: what we read)
  bool monitor;
  std::vector<size_t> requests;  // indices into the pending batch
};

}  // namespace

caf::error ept_controller_state::set_access(drv::view_id view,
                                            const std::vector<drv::access_change>& batch) {
  ++calls;
  auto t0 = std::chrono::steady_clock::now();
  auto err = session->set_access(view, batch);
  metrics->access_seconds().Observe(
    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  metrics->batch_size().Observe(double(batch.size()));
  if (err)
    ++failures;
  return err;
}

void ept_controller_state::publish_page_counts() {
  std::map<drv::view_id, size_t> per_view;
  for (auto& [key, before] : previous)
    ++per_view[key.first];
  for (auto view : views)
    metrics->monitored_pages(view).Set(double(per_view[view]));
}

void ept_controller_state::flush() {
  flush_queued = false;
  auto batch = std::move(pending);
  pending.clear();
  // Group per view; within a view the last request for a gfn decides its state.
  std::map<drv::view_id, std::map<drv::gfn_t, planned>> plans;
  std::vector<caf::error> result(batch.size());
  for (size_t i = 0; i < batch.size(); ++i) {
    auto& c = batch[i];
    auto& plan = plans[c.view];
    auto it = plan.find(c.gfn);
    if (it == plan.end())
      it = plan.emplace(c.gfn, planned{c.gfn, page_access::rwx, page_access::rwx, c.monitor, {}}).first;
    it->second.monitor = c.monitor;
    it->second.requests.push_back(i);
  }
  for (auto& [view, plan] : plans) {
    std::vector<drv::access_change> batch_changes;
    std::vector<planned*> applied;
    for (auto& [gfn, p] : plan) {
      auto key = std::pair{view, gfn};
      auto known = previous.find(key);
      if (p.monitor && known == previous.end()) {
        auto before = session->get_access(view, gfn);
        if (!before) {
          for (auto i : p.requests)
            result[i] = before.error();
          continue;
        }
        p.before = *before;
        p.target = without(*before, page_access::x);
      } else if (!p.monitor && known != previous.end()) {
        p.before = known->second;
        p.target = known->second;
      } else {
        continue;  // already in the requested state
      }
      batch_changes.push_back({gfn, p.target});
      applied.push_back(&p);
    }
    if (batch_changes.empty())
      continue;
    auto err = set_access(view, batch_changes);
    for (auto* p : applied) {
      bool done = !err;
      if (err) {
        // A prefix may have been applied: read back what the guest really has.
        auto now = session->get_access(view, p->gfn);
        done = now && *now == p->target;
      }
      metrics->access_changes(done).Increment();
      if (done) {
        ++changes;
        if (p->monitor)
          previous[{view, p->gfn}] = p->before;
        else
          previous.erase({view, p->gfn});
      } else {
        for (auto i : p->requests)
          result[i] = err;
      }
    }
  }
  publish_page_counts();
  for (size_t i = 0; i < batch.size(); ++i) {
    if (result[i])
      batch[i].promise.deliver(result[i]);
    else
      batch[i].promise.deliver(ok_atom::value);
  }
}

caf::error ept_controller_state::restore_everything() {
  caf::error first;
  std::map<drv::view_id, std::vector<drv::access_change>> by_view;
  for (auto& [key, before] : previous)
    by_view[key.first].push_back({key.second, before});
  for (auto& [view, batch] : by_view) {
    if (auto err = set_access(view, batch)) {
      metrics->access_changes(false).Increment(double(batch.size()));
      if (!first)
        first = std::move(err);
      continue;
    }
    changes += batch.size();
    metrics->access_changes(true).Increment(double(batch.size()));
    for (auto& c : batch)
      previous.erase({view, c.gfn});
  }
  publish_page_counts();
  return first;
}

ept_controller_impl::behavior_type
ept_controller(ept_controller_impl::stateful_pointer<ept_controller_state> self,
               std::shared_ptr<drv::domain_session> session,
               std::shared_ptr<domain_metrics> metrics) {
  self->state.session = std::move(session);
  self->state.metrics = std::move(metrics);
  auto enqueue = [self](drv::view_id view, drv::gfn_t gfn, bool monitor) {
    auto& st = self->state;
    auto promise = self->make_response_promise<ok_atom>();
    st.pending.push_back({view, gfn, monitor, promise});
    // The flush lands behind everything already queued: all of it goes into one batch.
    if (!st.flush_queued) {
      st.flush_queued = true;
      self->send(self, flush_atom::value);
    }
    return promise;
  };
  return {
    [self](create_atom, drv::page_access default_access) -> caf::result<drv::view_id> {
      auto view = self->state.session->create_view(default_access);
      if (!view)
        return std::move(view.error());
      self->state.views.push_back(*view);
      return *view;
    },
    [enqueue](monitor_atom, drv::view_id view, drv::gfn_t gfn) {
      return enqueue(view, gfn, true);
    },
    [enqueue](restore_atom, drv::view_id view, drv::gfn_t gfn) {
      return enqueue(view, gfn, false);
    },
    [self](flush_atom) { self->state.flush(); },
    [self](teardown_atom) -> caf::result<ok_atom> {
      auto& st = self->state;
      if (!st.pending.empty())
        st.flush();
      auto first = st.restore_everything();
      if (auto err = st.session->switch_all(0); err && !first)
        first = std::move(err);
      for (auto view : st.views)
        if (auto err = st.session->destroy_view(view); err && !first)
          first = std::move(err);
      st.views.clear();
      if (first)
        return first;
      return ok_atom::value;
    },
    [self](status_atom) {
      auto& st = self->state;
      return caf::result<uint64_t, uint64_t, uint64_t>{st.calls, st.changes, st.failures};
    },
  };
}

}  // namespace vmitap
