#include "actors/handlers/handler_relay.hpp"

#include "drivers/defaults.hpp"
#include "drivers/error.hpp"

#include <spdlog/spdlog.h>
#include <caf/exit_reason.hpp>
#include <caf/sec.hpp>

namespace vmitap {

namespace {

using self_ptr = handler_relay_impl::stateful_pointer<handler_relay_state>;

/// Gives the hit under `token` its one answer, if it has not had one.
void answer(self_ptr self, uint64_t token, std::optional<handler_decision> d) {
  auto& st = self->state;
  auto i = st.pending.find(token);
  if (i == st.pending.end())
    return;
  if (auto path = i->second.path.lock())
    path->decided(i->second.vcpu, token, std::move(d));
  st.pending.erase(i);
}

void fail(self_ptr self, uint64_t token, const std::string& handler, const std::string& why) {
  auto& st = self->state;
  if (!st.pending.count(token))
    return;
  st.domain->counters().handler_errors.add();
  if (st.failures_log.allow())
    spdlog::error(
      "domain {}: handler \"{}\": {}; its VCPU resumed unchanged (all failures are "
      "counted in vmitap_handler_errors_total){}",
      st.domain->info().name, handler, why, st.failures_log.note());
  answer(self, token, std::nullopt);
}

/// The hit's deadline passed: its VCPU resumes unchanged, whatever the handler does later.
void time_out(self_ptr self, uint64_t token) {
  auto& st = self->state;
  auto i = st.pending.find(token);
  if (i == st.pending.end())
    return;
  st.domain->counters().handler_timeouts.add();
  if (st.timeouts_log.allow())
    spdlog::warn(
      "domain {}: handler \"{}\" did not answer within {} µs; its VCPU resumed "
      "unchanged (all timeouts are counted in vmitap_handler_timeouts_total){}",
      st.domain->info().name, i->second.handler->name, i->second.handler->deadline.count(),
      st.timeouts_log.note());
  answer(self, token, std::nullopt);
}

handler_relay_state::instance* instance(self_ptr self, const std::string& name) {
  auto& st = self->state;
  if (auto i = st.instances.find(name); i != st.instances.end())
    return &i->second;
  auto h = st.registry ? st.registry->spawn(self->system(), name) : hit_handler_actor{};
  if (!h)
    return nullptr;
  self->monitor(h);
  return &st.instances.emplace(name, handler_relay_state::instance{h, 0}).first->second;
}

/// A call left the handler's queue (answered, failed, or given up on).
void settle(self_ptr self, const std::string& name, const caf::actor_addr& handler) {
  auto& st = self->state;
  if (auto i = st.instances.find(name);
      i != st.instances.end() && i->second.actor.address() == handler)
    --i->second.queued;
}

}  // namespace

handler_relay_impl::behavior_type handler_relay(self_ptr self, handler_registry_ptr registry,
                                                domain_ptr domain) {
  self->state.registry = std::move(registry);
  self->state.domain = std::move(domain);
  // A handler that dies (an exception, an exit) answers nothing: resume every VCPU that waits
  // for it now, and spawn a new instance at the next hit.
  self->set_down_handler([self](caf::down_msg& m) {
    auto& st = self->state;
    std::string name;
    for (auto i = st.instances.begin(); i != st.instances.end(); ++i)
      if (i->second.actor.address() == m.source) {
        name = i->first;
        st.instances.erase(i);
        break;
      }
    if (name.empty())
      return;
    std::vector<uint64_t> tokens;
    for (auto& [token, w] : st.pending)
      if (w.handler->name == name)
        tokens.push_back(token);
    for (auto token : tokens)
      fail(self, token, name, "stopped (" + to_string(m.reason) + ")");
  });
  self->set_exit_handler([self](caf::exit_msg& m) {
    // Held responses are the path's to answer when its poller releases it.
    for (auto& [name, h] : self->state.instances)
      self->send_exit(h.actor, caf::exit_reason::user_shutdown);
    self->quit(m.reason);
  });
  return {
    [self](hit_atom, handler_call& call) {
      auto& st = self->state;
      const auto& name = call.handler->name;
      auto token = call.token;
      st.pending.emplace(token,
                         handler_relay_state::waiting{call.path, call.hit.vcpu, call.handler});
      auto* inst = instance(self, name);
      if (!inst) {
        fail(self, token, name, "no handler is registered by this name");
        return;
      }
      if (inst->queued >= defaults::handler_queue_bound) {
        // A handler slower than its hits: its queue would grow without bound. This hit is
        // not sent; its VCPU resumes now.
        st.domain->counters().handler_queue_full.add();
        if (st.full_log.allow())
          spdlog::warn(
            "domain {}: handler \"{}\" has {} calls queued; hits past that resume "
            "their VCPU at once (counted in vmitap_handler_dropped_total){}",
            st.domain->info().name, name, inst->queued, st.full_log.note());
        answer(self, token, std::nullopt);
        return;
      }
      ++inst->queued;
      auto deadline = call.handler->deadline;
      auto sent = std::chrono::steady_clock::now();
      call.hit.deadline = sent + deadline;
      // The VCPU waits until the deadline; the call stays counted in the queue until the
      // handler answers, so a handler that falls behind is seen.
      self->delayed_send(self, deadline, deadline_atom_v, token);
      auto handler = inst->actor.address();
      self
        ->request(inst->actor, deadline + defaults::handler_answer_limit, hit_atom_v,
                  std::move(call.hit))
        .then(
          [self, token, sent, name, handler](handler_decision& d) {
            settle(self, name, handler);
            auto& st = self->state;
            if (!st.pending.count(token))
              return;  // too late: the VCPU resumed at its deadline
            st.domain->counters().handler_seconds.observe(
              std::chrono::duration<double>(std::chrono::steady_clock::now() - sent).count());
            answer(self, token, std::move(d));
          },
          [self, token, name, handler](caf::error& err) {
            settle(self, name, handler);
            if (err == caf::sec::request_timeout)
              return;  // never answered; its VCPU resumed at the deadline
            if (code_of(err) == ec::timeout) {
              // A function handler skipped the call: its deadline passed while it was queued.
              self->state.domain->counters().handler_expired.add();
              time_out(self, token);
              return;
            }
            fail(self, token, name, render(err));
          });
    },
    [self](deadline_atom, uint64_t token) { time_out(self, token); },
  };
}

}  // namespace vmitap
