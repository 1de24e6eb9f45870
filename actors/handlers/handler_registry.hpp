#pragma once

// Handlers by name, as the program that embeds vmitap registers them and a config names them.

#include "actors/handlers/handlers.hpp"

#include <atomic>
#include <functional>
#include <map>
#include <string_view>

namespace vmitap {

/// Each monitored domain gets its own instance of each handler it uses (spawned at its
/// first hit), so one domain's slow handler never queues another domain's hits.
class handler_registry {
public:
  using hit_function = std::function<handler_decision(const handler_hit&)>;
  using factory = std::function<hit_handler_actor(caf::actor_system&)>;

  /// A plain function, run on a thread of its own per domain: it may block or spin without
  /// taking a thread from the actors that carry the control plane.
  void add(std::string name, hit_function fn);
  /// An actor from `make`; it may answer later through a response promise.
  void add_actor(std::string name, factory make);

  bool contains(std::string_view name) const { return factories_.count(name) != 0; }
  std::vector<std::string> names() const;
  /// A new instance of `name`; an invalid handle if none is registered by that name.
  hit_handler_actor spawn(caf::actor_system& sys, std::string_view name) const;
  /// Calls of function handlers running now, in every instance.
  uint32_t functions_running() const { return running_->load(); }

private:
  std::map<std::string, factory, std::less<>> factories_;
  std::shared_ptr<std::atomic<uint32_t>> running_ = std::make_shared<std::atomic<uint32_t>>(0);
};

using handler_registry_ptr = std::shared_ptr<const handler_registry>;

}  // namespace vmitap
