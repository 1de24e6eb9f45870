#pragma once

// The model room, at the bottom of actors/: the values every other room shares (a breakpoint
// and its options, a domain's plan, a hit, a session's report, the breakpoint table, the
// counters, captures) and the small tools they are built with. It uses drivers/ only.
//
// Above it, each using only the rooms below: records (sinks) and handlers, then hotpath (the
// pollers), then control (registry, controller, supervisor). tests/layers_test.sh checks it.
//
// This header is also vmitap's CAF type-ID block: every atom and every message type the
// actors exchange has its ID here (CAF_ENABLE_TYPE_ID_CHECKS makes a message with an
// unregistered type a compile error). Types of higher rooms are only named here; the engine
// adds its own block after this one.

#include "drivers/driver.hpp"

#include <caf/type_id.hpp>

#include <memory>
#include <string>
#include <vector>

namespace vmitap {

struct batch_result;
struct breakpoint;
struct breakpoint_def;
struct domain_plan;
struct domain_report;
struct handler_call;
struct handler_decision;
struct handler_hit;
struct hit_record;
struct page_change;
struct table_write;
using breakpoint_ptr = std::shared_ptr<const breakpoint>;
using plan_ptr = std::shared_ptr<const domain_plan>;
using hit_batch = std::vector<hit_record>;

/// When a breakpoint was armed: with its session, or by a reload later (it counts from then).
enum class armed_by : uint8_t { attach, reload };

}  // namespace vmitap

CAF_BEGIN_TYPE_ID_BLOCK(vmitap, caf::first_custom_type_id)

// Verbs (CAF 0.17: at most 10 characters).
CAF_ADD_ATOM(vmitap, vmitap, add_atom, "add")
CAF_ADD_ATOM(vmitap, vmitap, remove_atom, "remove")
CAF_ADD_ATOM(vmitap, vmitap, clear_atom, "clear")
CAF_ADD_ATOM(vmitap, vmitap, list_atom, "list")
CAF_ADD_ATOM(vmitap, vmitap, apply_atom, "apply")
CAF_ADD_ATOM(vmitap, vmitap, flush_atom, "flush")
CAF_ADD_ATOM(vmitap, vmitap, create_atom, "create")
CAF_ADD_ATOM(vmitap, vmitap, teardown_atom, "teardown")
CAF_ADD_ATOM(vmitap, vmitap, attach_atom, "attach")
CAF_ADD_ATOM(vmitap, vmitap, detach_atom, "detach")
CAF_ADD_ATOM(vmitap, vmitap, died_atom, "died")
CAF_ADD_ATOM(vmitap, vmitap, status_atom, "status")
CAF_ADD_ATOM(vmitap, vmitap, hit_atom, "hit")
CAF_ADD_ATOM(vmitap, vmitap, started_atom, "started")
CAF_ADD_ATOM(vmitap, vmitap, stopped_atom, "stopped")
CAF_ADD_ATOM(vmitap, vmitap, stop_atom, "stop")
CAF_ADD_ATOM(vmitap, vmitap, ok_atom, "ok")
CAF_ADD_ATOM(vmitap, vmitap, update_atom, "update")
CAF_ADD_ATOM(vmitap, vmitap, reload_atom, "reload")
CAF_ADD_ATOM(vmitap, vmitap, released_atom, "released")
CAF_ADD_ATOM(vmitap, vmitap, reopen_atom, "reopen")
CAF_ADD_ATOM(vmitap, vmitap, tick_atom, "tick")
CAF_ADD_ATOM(vmitap, vmitap, suppress_atom, "suppress")
CAF_ADD_ATOM(vmitap, vmitap, rearm_atom, "rearm")
CAF_ADD_ATOM(vmitap, vmitap, deadline_atom, "deadline")
CAF_ADD_ATOM(vmitap, vmitap, locate_atom, "locate")
CAF_ADD_ATOM(vmitap, vmitap, walk_atom, "walk")
CAF_ADD_ATOM(vmitap, vmitap, tables_atom, "tables")

// Values.
CAF_ADD_TYPE_ID(vmitap, (std::vector<std::string>))
CAF_ADD_TYPE_ID(vmitap, (vmitap::armed_by))
CAF_ADD_TYPE_ID(vmitap, (vmitap::drv::domain_info))
CAF_ADD_TYPE_ID(vmitap, (vmitap::drv::page_access))
CAF_ADD_TYPE_ID(vmitap, (vmitap::breakpoint_def))
CAF_ADD_TYPE_ID(vmitap, (std::vector<vmitap::breakpoint_def>))
CAF_ADD_TYPE_ID(vmitap, (vmitap::batch_result))
CAF_ADD_TYPE_ID(vmitap, (vmitap::domain_report))
CAF_ADD_TYPE_ID(vmitap, (std::vector<vmitap::domain_report>))
CAF_ADD_TYPE_ID(vmitap, (vmitap::page_change))
CAF_ADD_TYPE_ID(vmitap, (std::vector<vmitap::page_change>))
CAF_ADD_TYPE_ID(vmitap, (std::vector<caf::error>))
CAF_ADD_TYPE_ID(vmitap, (vmitap::handler_hit))
CAF_ADD_TYPE_ID(vmitap, (vmitap::handler_decision))

// Pointers to shared, immutable state.
CAF_ADD_TYPE_ID(vmitap, (vmitap::breakpoint_ptr))
CAF_ADD_TYPE_ID(vmitap, (std::vector<vmitap::breakpoint_ptr>))
CAF_ADD_TYPE_ID(vmitap, (vmitap::plan_ptr))
CAF_ADD_TYPE_ID(vmitap, (vmitap::hit_batch))
CAF_ADD_TYPE_ID(vmitap, (vmitap::handler_call))
CAF_ADD_TYPE_ID(vmitap, (vmitap::table_write))

CAF_END_TYPE_ID_BLOCK(vmitap)

// Not serialisable yet (a capture's register is a pointer to member, a hit carries the
// breakpoint it hit): allowed as messages inside this one process only.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vmitap::armed_by)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vmitap::drv::domain_info)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vmitap::drv::page_access)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vmitap::breakpoint_def)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<vmitap::breakpoint_def>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vmitap::batch_result)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vmitap::page_change)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<vmitap::page_change>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<caf::error>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vmitap::handler_hit)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vmitap::handler_decision)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vmitap::breakpoint_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<vmitap::breakpoint_ptr>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vmitap::plan_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vmitap::hit_batch)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vmitap::handler_call)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vmitap::table_write)
