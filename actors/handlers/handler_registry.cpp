#include "actors/handlers/handler_registry.hpp"

#include "drivers/error.hpp"

#include <caf/actor_system.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <sys/resource.h>
#include <unistd.h>

namespace vmitap {

namespace {

/// The nice value of a function handler's thread (the pollers run at 0).
constexpr int handler_nice = 10;

}  // namespace

void handler_registry::add(std::string name, hit_function fn) {
  add_actor(std::move(name), [fn = std::move(fn), running = running_](caf::actor_system& sys) {
    // Hidden: a function may block past the stop; its VCPUs were resumed at their deadlines,
    // so the stop does not wait for it (the engine leaves such threads to the process's exit).
    // The unused int: CAF 0.17 binds a reference through a null pointer when a function
    // actor takes no argument (UBSan reports it).
    return sys.spawn<caf::detached + caf::hidden>(
      [fn, running](int) -> hit_handler_actor::behavior_type {
        // Runs on the handler's own thread. A handler holds one VCPU; a poller serves many
        // domains: when they compete for a core, the poller should win.
        setpriority(PRIO_PROCESS, id_t(gettid()), handler_nice);
        // What a function throws answers its hit as an error: the VCPU resumes unchanged and
        // the instance lives on for the next hit.
        return {[fn, running](hit_atom, const handler_hit& hit) -> caf::result<handler_decision> {
          // Queued past its deadline: the VCPU has resumed, a decision would be ignored.
          if (std::chrono::steady_clock::now() >= hit.deadline)
            return make_error(ec::timeout, "expired before the handler ran");
          running->fetch_add(1);
          struct done {
            std::atomic<uint32_t>& n;
            ~done() { n.fetch_sub(1); }
          } guard{*running};
          try {
            return fn(hit);
          } catch (const std::exception& e) {
            return make_error(ec::handler_failed, std::string("threw: ") + e.what());
          } catch (...) {
            return make_error(ec::handler_failed, "threw a non-standard exception");
          }
        }};
      },
      0);
  });
}

void handler_registry::add_actor(std::string name, factory make) {
  factories_.insert_or_assign(std::move(name), std::move(make));
}

std::vector<std::string> handler_registry::names() const {
  std::vector<std::string> out;
  for (auto& [name, make] : factories_)
    out.push_back(name);
  return out;
}

hit_handler_actor handler_registry::spawn(caf::actor_system& sys, std::string_view name) const {
  auto i = factories_.find(name);
  return i == factories_.end() ? hit_handler_actor{} : i->second(sys);
}

}  // namespace vmitap
