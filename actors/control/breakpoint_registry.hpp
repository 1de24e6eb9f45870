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
//
// A virtual breakpoint (a symbol or a kernel virtual address) is placed by a walk of the
// kernel's page tables. One whose page is not mapped is pending: kept by name, out of the
// table. The page holding the entry that decides it (the clear one, or a 4 KiB leaf) loses
// Write in every view; the hot path holds the VCPU that writes it at the SINGLESTEP after the
// write, the registry walks again, arms, moves or disarms, and lets the VCPU go once the
// pages have settled.

#include "actors/control/control.hpp"
#include "actors/control/name_index.hpp"
#include "actors/control/symbol_resolver.hpp"
#include "actors/hotpath/hotpath.hpp"
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
  /// What virtual breakpoints are walked through; none: only physical ones can be added.
  std::shared_ptr<drv::domain_session> session;
  uint64_t kernel_cr3 = 0;  ///< a kernel-mode VCPU's (tables_atom sets a newer one)
};

struct breakpoint_registry_state {
  breakpoint_registry_state() = default;  // not an aggregate: CAF would build it from `self`
  static inline const char* name = "vmitap.breakpoint_registry";

  /// A request waiting for pages to settle.
  struct pending {
    std::variant<caf::typed_response_promise<batch_result>, caf::typed_response_promise<ok_atom>,
                 std::function<void()>>
      promise;
    batch_result result;
    size_t pages_left = 0;
    caf::error first_error;      // clear: the first page that could not be restored
    std::function<void()> then;  // after it is answered
  };
  /// add: armed (Execute removed); remove: disarmed; settle: as wanted, whatever that is.
  enum class wait_kind : uint8_t { add, remove, clear, settle };
  struct waiter {
    std::shared_ptr<pending> request;
    wait_kind kind;
    std::vector<breakpoint_ptr> added;  // add: the request's breakpoints on this page;
                                        // settle: pending ones a watch of it is for
  };
  /// A page's state in the guest. It lacks Execute while it has breakpoints (the builder's,
  /// the table's) and Write while it is a watched page table.
  struct page {
    drv::view_id view = 0;
    drv::gfn_t gfn = 0;
    drv::page_access denied = drv::page_access::none;  // confirmed by the controller
    drv::page_access sent = drv::page_access::none;    // in flight
    bool in_flight = false;
    bool failed = false;  // the last change failed: not retried until asked again
    std::vector<waiter> waiters;
  };
  /// A virtual breakpoint's target and where its last walk placed it.
  struct virtual_target {
    breakpoint_ptr bp;
    uint64_t va = 0;
    virtual_place at;
  };
  breakpoint_registry_config cfg;
  std::unique_ptr<table_builder> builder;
  std::unordered_map<uint64_t, page> pages;  // page_key → page: monitored, or on its way
  name_index by_name;
  std::map<std::vector<std::string>, tag_list> tags;  // one list per distinct set of tags
  std::set<uint64_t> unsettled;  // pages whose wanted and confirmed state may differ
  /// Suppressed breakpoints, out of the table until their cool-down ends (still by name).
  std::unordered_map<const breakpoint*, breakpoint_ptr> suppressed;
  std::unordered_map<const breakpoint*, virtual_target> virtuals;
  /// Virtual breakpoints that failed to arm or to be watched, forgotten by name: dropped
  /// (with their watch) once no page is being iterated.
  std::vector<breakpoint_ptr> failed_virtuals;
  std::map<drv::gfn_t, uint32_t> watches;  // page table → virtual breakpoints it decides
  uint64_t cr3 = 0;                        // walked through
  bool batch_in_flight = false;
};

/// The registry's full behaviour: its interface plus the end of a cool-down (to itself).
using breakpoint_registry_impl =
  breakpoint_registry_actor::extend<caf::reacts_to<rearm_atom, breakpoint_ptr>>;

breakpoint_registry_impl::behavior_type breakpoint_registry(
  breakpoint_registry_impl::stateful_pointer<breakpoint_registry_state> self,
  breakpoint_registry_config cfg);

}  // namespace vmitap
