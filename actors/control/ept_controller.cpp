#include "actors/control/ept_controller.hpp"

#include "drivers/defaults.hpp"
#include "drivers/error.hpp"

#include <spdlog/spdlog.h>

#include <thread>

namespace vmitap {

using drv::page_access;

std::vector<ept_controller_state::outcome> ept_controller_state::write(
  drv::view_id view, const std::vector<drv::access_change>& batch, caf::error& err) {
  auto& c = cfg.domain->counters();
  c.access_calls.add();
  auto t0 = std::chrono::steady_clock::now();
  {
    auto call = teardown_watch::call(cfg.watch, "set_access");
    err = cfg.session->set_access(view, batch);
  }
  c.access_seconds.observe(
    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  c.batch_size.observe(double(batch.size()));
  std::vector<outcome> done(batch.size(), err ? outcome::unknown : outcome::applied);
  if (err) {
    // A prefix may have been applied: read back what the guest really has.
    std::vector<drv::gfn_t> gfns;
    for (auto& ch : batch)
      gfns.push_back(ch.gfn);
    std::vector<page_access> now(batch.size());
    if (auto read_err = cfg.session->get_access(view, gfns, now))
      // The write's error stays the result; what is not known is counted as failed.
      spdlog::warn("domain {}: view {}: {}; reading back what was applied failed too: {}",
                   cfg.domain->info().name, view, render(err), render(read_err));
    else
      for (size_t i = 0; i < batch.size(); ++i)
        done[i] = now[i] == batch[i].value ? outcome::applied : outcome::unchanged;
  }
  for (auto d : done)
    (d == outcome::applied ? c.access_ok : c.access_failed).add();
  return done;
}

void ept_controller_state::watched(const page_key& key, bool changed) {
  if (!cfg.watch)
    return;
  if (changed)
    cfg.watch->changed(key.first, key.second);
  else
    cfg.watch->restored(key.first, key.second);
}

change_results ept_controller_state::apply(const page_changes& changes) {
  change_results results(changes.size());
  std::map<drv::view_id, std::vector<size_t>> by_view;
  for (size_t i = 0; i < changes.size(); ++i)
    by_view[changes[i].view].push_back(i);
  for (auto& entry : by_view) {
    auto view = entry.first;  // a plain variable: lambdas below capture it (clang 14)
    auto& indices = entry.second;
    // What monitored pages have now: one batched read for every page not yet monitored.
    std::vector<drv::gfn_t> unknown;
    for (auto i : indices)
      if (changes[i].deny != page_access::none && !previous.contains({view, changes[i].gfn}))
        unknown.push_back(changes[i].gfn);
    std::vector<page_access> before(unknown.size());
    caf::error read_error;
    if (!unknown.empty())
      read_error = cfg.session->get_access(view, unknown, before);
    std::map<drv::gfn_t, page_access> before_of;
    for (size_t k = 0; k < unknown.size() && !read_error; ++k)
      before_of[unknown[k]] = before[k];

    std::vector<drv::access_change> batch;
    std::vector<size_t> batched;  // index into changes, per batch entry
    for (auto i : indices) {
      auto& ch = changes[i];
      auto known = previous.find({view, ch.gfn});
      if (ch.deny != page_access::none && known == previous.end()) {
        if (read_error) {
          results[i] = read_error;
          continue;
        }
        batch.push_back({ch.gfn, without(before_of[ch.gfn], ch.deny)});
      } else if (ch.deny != page_access::none) {
        // Another set of rights to deny, or again after a write whose outcome is unknown:
        // from what the page had before vmitap.
        before_of[ch.gfn] = known->second;
        batch.push_back({ch.gfn, without(known->second, ch.deny)});
      } else if (known != previous.end()) {
        batch.push_back({ch.gfn, known->second});
      } else {
        continue;  // already as asked
      }
      batched.push_back(i);
    }
    if (batch.empty())
      continue;
    caf::error err;
    auto t0 = std::chrono::steady_clock::now();
    auto done = write(view, batch, err);
    spdlog::debug(
      "domain {}: view {}: {} page(s) changed in one call, {} µs{}", cfg.domain->info().name, view,
      batch.size(),
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0)
        .count(),
      err ? ": " + render(err) : std::string{});
    for (size_t k = 0; k < batch.size(); ++k) {
      auto& ch = changes[batched[k]];
      page_key key{view, ch.gfn};
      if (done[k] != outcome::applied)
        results[batched[k]] = err;
      if (done[k] == outcome::unknown) {
        // Maybe applied: restore it at teardown, and write it again when next asked.
        previous.emplace(key, before_of[ch.gfn]);
        watched(key, true);
        continue;
      }
      if (done[k] == outcome::unchanged)
        continue;
      bool changed = ch.deny != page_access::none;
      if (changed)
        previous[key] = before_of[ch.gfn];
      else
        previous.erase(key);
      watched(key, changed);
    }
  }
  return results;
}

caf::error ept_controller_state::teardown() {
  caf::error first;
  std::map<drv::view_id, std::vector<drv::access_change>> by_view;
  for (auto& [key, before] : previous)
    by_view[key.first].push_back({key.second, before});
  for (auto& [view, batch] : by_view) {
    caf::error err;
    auto pages = batch.size();
    // What a failing call left unapplied is written again, after a pause: only a fault
    // that outlasts every attempt (or a dead domain) leaves pages changed.
    for (int attempt = 1; !batch.empty(); ++attempt) {
      err = {};
      auto done = write(view, batch, err);
      std::vector<drv::access_change> left;
      for (size_t k = 0; k < batch.size(); ++k)
        if (done[k] == outcome::applied) {
          previous.erase({view, batch[k].gfn});
          watched({view, batch[k].gfn}, false);
        } else {
          left.push_back(batch[k]);
        }
      batch = std::move(left);
      if (batch.empty() || attempt == defaults::restore_attempts || code_of(err) == ec::domain_dead)
        break;
      std::this_thread::sleep_for(defaults::restore_backoff * attempt);
    }
    if (!batch.empty() && err && !first)
      first =
        make_error(code_of(err), context_of(err) + " (restoring view " + std::to_string(view) +
                                   ": " + std::to_string(batch.size()) + " of " +
                                   std::to_string(pages) + " pages left changed)");
  }
  {
    auto call = teardown_watch::call(cfg.watch, "switch_all");
    if (auto err = cfg.session->switch_all(0); err && !first)
      first = std::move(err);
  }
  for (auto view : views) {
    auto call = teardown_watch::call(cfg.watch, "destroy_view");
    if (auto err = cfg.session->destroy_view(view); err && !first)
      first = std::move(err);
  }
  views.clear();
  return first;
}

ept_controller_actor::behavior_type ept_controller(
  ept_controller_actor::stateful_pointer<ept_controller_state> self, ept_controller_config cfg) {
  self->state.cfg = std::move(cfg);
  return {
    [self](create_atom, drv::page_access default_access) -> caf::result<drv::view_id> {
      auto view = self->state.cfg.session->create_view(default_access);
      if (!view)
        return std::move(view.error());
      self->state.views.push_back(*view);
      return *view;
    },
    [self](apply_atom, const page_changes& changes) { return self->state.apply(changes); },
    [self](teardown_atom) -> caf::result<ok_atom> {
      if (auto err = self->state.teardown())
        return err;
      return ok_atom_v;
    },
  };
}

}  // namespace vmitap
