#pragma once

// Every default and timeout in one place.

#include <chrono>
#include <cstddef>
#include <cstdint>

namespace vmitap::defaults {

using namespace std::chrono_literals;

/// An actor request that should be answered at once (status, drain, list).
inline constexpr auto request_timeout = 10s;
/// An access change (get + batched set through the driver).
inline constexpr auto access_change_timeout = 10s;
/// Attaching one domain (views, breakpoints).
inline constexpr auto attach_timeout = 30s;
/// Detaching every domain on stop (SIGINT/SIGTERM).
inline constexpr auto stop_deadline = 20s;
/// Hit records a sink may have queued before further ones are dropped (and counted).
inline constexpr size_t sink_queue_bound = 65536;
/// Messages an actor handles before its worker moves on. A VCPU actor in a flood refills its
/// own mailbox (each response raises the next event), so unbounded throughput would let it
/// keep a worker forever and starve every other actor.
inline constexpr size_t max_throughput = 64;
/// Where the Prometheus exporter listens (loopback only unless configured otherwise).
inline constexpr const char* metrics_listen = "127.0.0.1:9464";
/// Scheduler threads of the actor system.
inline constexpr size_t worker_threads = 2;

}  // namespace vmitap::defaults
