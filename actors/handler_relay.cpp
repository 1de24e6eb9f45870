#include "actors/handler_relay.hpp"

#include "actors/event_path.hpp"
#include "drivers/error.hpp"

#include <caf/exit_reason.hpp>
#include <caf/sec.hpp>
#include <spdlog/spdlog.h>

namespace vmitap {

namespace {

using self_ptr = handler_relay_actor::stateful_pointer<handler_relay_state>;

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
  if (!st.failing)
    spdlog::error("domain {}: handler \"{}\": {}; its VCPU resumed unchanged (further failures "
                  "are counted in vmitap_handler_errors_total)",
                  st.domain->info().name, handler, why);
  st.failing = true;
  answer(self, token, std::nullopt);
}

hit_handler_actor instance(self_ptr self, const std::string& name) {
  auto& st = self->state;
  if (auto i = st.instances.find(name); i != st.instances.end())
    return i->second;
  auto h = st.registry ? st.registry->spawn(self->system(), name) : hit_handler_actor{};
  if (h) {
    self->monitor(h);
    st.instances.emplace(name, h);
  }
  return h;
}

}  // namespace

handler_relay_actor::behavior_type handler_relay(self_ptr self, handler_registry_ptr registry,
                                                 domain_ptr domain) {
  self->state.registry = std::move(registry);
  self->state.domain = std::move(domain);
  // A handler that dies (an exception, an exit) answers nothing: resume every VCPU that waits
  // for it now, and spawn a new instance at the next hit.
  self->set_down_handler([self](caf::down_msg& m) {
    auto& st = self->state;
    std::string name;
    for (auto i = st.instances.begin(); i != st.instances.end(); ++i)
      if (i->second.address() == m.source) {
        name = i->first;
        st.instances.erase(i);
        break;
      }
    std::vector<uint64_t> tokens;
    for (auto& [token, w] : st.pending)
      if (w.handler == m.source)
        tokens.push_back(token);
    for (auto token : tokens)
      fail(self, token, name, "stopped (" + to_string(m.reason) + ")");
  });
  self->set_exit_handler([self](caf::exit_msg& m) {
    // Held responses are the path's to answer when its poller releases it.
    for (auto& [name, h] : self->state.instances)
      self->send_exit(h, caf::exit_reason::user_shutdown);
    self->quit(m.reason);
  });
  return {
    [self](hit_atom, handler_call& call) {
      auto& st = self->state;
      const auto& name = call.handler->name;
      auto token = call.token;
      auto h = instance(self, name);
      st.pending.emplace(token, handler_relay_state::waiting{call.path, call.hit.vcpu,
                                                             h ? h.address() : caf::actor_addr{}});
      if (!h) {
        fail(self, token, name, "no handler is registered by this name");
        return;
      }
      auto deadline = call.handler->deadline;
      auto sent = std::chrono::steady_clock::now();
      self->request(h, deadline, hit_atom::value, std::move(call.hit))
        .then(
          [self, token, sent](handler_decision& d) {
            auto& st = self->state;
            st.domain->counters().handler_seconds.observe(
              std::chrono::duration<double>(std::chrono::steady_clock::now() - sent).count());
            st.timing_out = st.failing = false;
            answer(self, token, std::move(d));
          },
          [self, token, name, deadline](caf::error& err) {
            auto& st = self->state;
            if (err != caf::sec::request_timeout) {
              fail(self, token, name, render(err));
              return;
            }
            if (!st.pending.count(token))
              return;
            st.domain->counters().handler_timeouts.add();
            if (!st.timing_out)
              spdlog::warn("domain {}: handler \"{}\" did not answer within {} µs; its VCPU "
                           "resumed unchanged (further timeouts are counted in "
                           "vmitap_handler_timeouts_total)",
                           st.domain->info().name, name, deadline.count());
            st.timing_out = true;
            answer(self, token, std::nullopt);
          });
    },
  };
}

}  // namespace vmitap
