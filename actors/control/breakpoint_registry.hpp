#pragma once

// The one authority on a domain's breakpoints. A page is monitored while it has breakpoints
// (refcounting by the list of them); the registry publishes the table before it asks the
// controller to change any page, so no VCPU can trap on a page it does not know yet.
//
// Each page has a wanted state (breakpoints or none) and a confirmed one (what the
// controller reported); the registry sends the controller one batch at a time with every
// page whose states differ, and answers each add, remove or clear once all the pages it
// touched are settled, successfully or not. Every request is answered.
//
// A breakpoint over its rate limit is suppressed: out of the table (its page restored if it
// was the page's last) but kept by name, and put back, the same object, after its cool-down.

#include "actors/control/control.hpp"
#include "actors/control/name_index.hpp"
#include "actors/model/monitored_domain.hpp"

#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <caf/typed_response_promise.hpp>

#include <set>
#include <string_view>
#include <unordered_map>
#include <variant>

namespace vmitap {

struct breakpoint_registry_config {
  ept_controller_actor controller;
  domain_ptr domain;                          ///< where the table is published
  std::map<std::string, drv::view_id> views;  ///< the views breakpoints may be in, by name
  drv::gfn_t max_gfn = 0;
};

struct breakpoint_registry_state {
  breakpoint_registry_state() = default;  // not an aggregate: CAF would build it from `self`
  static inline const char* name = "vmitap.breakpoint_registry";

  /// A request waiting for pages to settle.
  struct pending {
    std::variant<caf::typed_response_promise<batch_result>, caf::typed_response_promise<ok_atom>>
      promise;
    batch_result result;
    size_t pages_left = 0;
    caf::error first_error;  // clear: the first page that could not be restored
  };
  enum class wait_kind : uint8_t { add, remove, clear };
  struct waiter {
    std::shared_ptr<pending> request;
    wait_kind kind;
    std::vector<breakpoint_ptr> added;  // add: the request's breakpoints on this page
  };
  /// A page's state in the guest. Its breakpoints are the builder's (the table's): the page
  /// is wanted monitored while it has any.
  struct page {
    drv::view_id view = 0;
    drv::gfn_t gfn = 0;
    bool monitored = false;  // confirmed by the controller
    bool in_flight = false;
    bool failed = false;  // the last change failed: not retried until asked again
    std::vector<waiter> waiters;
  };
  breakpoint_registry_config cfg;
  std::unique_ptr<table_builder> builder;
  std::unordered_map<uint64_t, page> pages;  // page_key → page: monitored, or on its way
  name_index by_name;
  std::map<std::vector<std::string>, tag_list> tags;  // one list per distinct set of tags
  std::set<uint64_t> unsettled;  // pages whose wanted and confirmed state may differ
  /// Suppressed breakpoints, out of the table until their cool-down ends (still by name).
  std::unordered_map<const breakpoint*, breakpoint_ptr> suppressed;
  bool batch_in_flight = false;
};

/// The registry's full behaviour: its interface plus the end of a cool-down (to itself).
using breakpoint_registry_impl =
  breakpoint_registry_actor::extend<caf::reacts_to<rearm_atom, breakpoint_ptr>>;

breakpoint_registry_impl::behavior_type breakpoint_registry(
  breakpoint_registry_impl::stateful_pointer<breakpoint_registry_state> self,
  breakpoint_registry_config cfg);

}  // namespace vmitap
