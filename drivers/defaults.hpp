#pragma once

// Every default and timeout vmitap has, in one place. Every layer reads them from here.

#include <chrono>
#include <cstddef>
#include <cstdint>

namespace vmitap::defaults {

using namespace std::chrono_literals;

/// An actor request that should be answered at once (status, list, flush).
inline constexpr auto request_timeout = 10s;
/// One batch of access changes (batched read, batched write, read-back on failure).
inline constexpr auto access_change_timeout = 30s;
/// Attaching one domain: views, every breakpoint armed, events started.
inline constexpr auto attach_timeout = 60s;
/// At attach, while every VCPU runs in user mode (under KPTI its tables do not map the
/// kernel), the domain runs this long between looks for one in kernel mode, this many times.
inline constexpr auto kernel_mode_wait = 20ms;
inline constexpr uint32_t kernel_mode_tries = 250;  // 5 s
/// Detaching every domain on stop (SIGINT/SIGTERM), unless the config says otherwise.
inline constexpr auto stop_deadline = 20s;
/// Teardown writes a page's access back this often before it reports the page left changed:
/// a failing call may be transient (ENOMEM, EBUSY). Between attempts it waits restore_backoff
/// times the attempt's number.
inline constexpr int restore_attempts = 4;
inline constexpr auto restore_backoff = 5ms;
/// How long a poller hands a ring back after it was asked to (final drain included).
inline constexpr auto ring_release_timeout = 10s;

/// Calls one handler instance may have queued or running; past it a hit's VCPU resumes at
/// once and the call is counted as dropped.
inline constexpr size_t handler_queue_bound = 64;
/// How long the relay waits for a handler's own answer after the hit's deadline resumed the
/// VCPU, before it stops counting the call against the handler's queue.
inline constexpr auto handler_answer_limit = 60s;

/// A recurring failure (refused responses, handler timeouts, sink errors) is logged at most
/// this often per cause, with the count of the ones left out.
inline constexpr auto log_interval = 10s;

/// Longest name a config may give (domains, views, breakpoints, tags, captures, sinks, any
/// key) and longest string (a path): a record, a label and a log line stay lines.
inline constexpr size_t max_name_bytes = 256;
inline constexpr size_t max_string_bytes = 4096;
/// Captures one breakpoint may have, and bytes they may read at one hit together.
inline constexpr size_t max_captures = 32;
inline constexpr size_t max_capture_bytes_per_hit = 16384;

/// Hit records a sink may have queued before further ones are dropped (and counted).
inline constexpr size_t sink_queue_bound = 65536;
/// Bytes of hit records a sink may have queued (captures make records' sizes vary).
inline constexpr size_t sink_queue_bytes = size_t(64) << 20;
/// A sink writes its buffer out at least this often (a `tail -f` sees hits within it).
inline constexpr auto sink_flush_interval = 100ms;
/// Rotated generations a JSONL sink keeps (PATH.1 … PATH.N).
inline constexpr uint32_t sink_rotate_keep = 5;

/// Messages an actor handles before its worker moves on.
inline constexpr size_t max_throughput = 64;
/// Scheduler threads of the actor system (control plane: attach, reload, handlers, sinks).
inline constexpr size_t worker_threads = 2;

/// Requests a poller copies out of one ring before it moves on to the next ring.
inline constexpr size_t ring_batch = 64;
/// A poller with nothing to do keeps polling this long before it sleeps on its rings' fds:
/// a request that arrives meanwhile is answered without a wake-up (tens of µs on Linux).
inline constexpr auto poller_spin = 50us;

/// Where the Prometheus exporter listens: loopback only unless configured otherwise. The
/// exporter range 9100-9999 of Prometheus' port allocations is full and 9464 is
/// OpenTelemetry's exporter default, so vmitap takes 10474 (no well-known service uses it).
inline constexpr const char* metrics_listen = "127.0.0.1:10474";

/// The config file a service reads when no --config is given.
inline constexpr const char* config_path = "/etc/vmitap/vmitap.toml";

}  // namespace vmitap::defaults
