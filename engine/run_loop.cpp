#include "engine/run_loop.hpp"

#include "drivers/error.hpp"
#include "engine/backends.hpp"
#include "engine/engine.hpp"
#include "engine/exit_codes.hpp"
#include "engine/listen_address.hpp"
#include "engine/service.hpp"
#include "engine/signals.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <tuple>

namespace vmitap {

namespace {

using clock_type = std::chrono::steady_clock;

int exit_code_of(const caf::error& err) {
  switch (code_of(err)) {
    case ec::listen_failed:
      return exit_code::listen;
    case ec::no_hypervisor:
    case ec::incompatible_hypervisor:
      return exit_code::unavailable;
    case ec::config_invalid:
      return exit_code::config;
    default:
      return exit_code::failed;
  }
}

void print_progress(engine& eng, clock_type::time_point t0, uint64_t& last_events,
                    uint64_t& last_hits, clock_type::time_point& last, bool terminal) {
  auto now = clock_type::now();
  uint64_t events = 0, hits = 0;
  std::string per_domain;
  for (auto& p : eng.progress()) {
    events += p.events;
    hits += p.hits;
    per_domain +=
      " | " + p.name + " " + std::to_string(p.events) + "ev " + std::to_string(p.hits) + "h";
  }
  double dt = std::max(1e-9, std::chrono::duration<double>(now - last).count());
  auto line =
    fmt::format("t={:6.1f}s {:>10.0f} events/s {:>8.0f} hits/s{}",
                std::chrono::duration<double>(now - t0).count(), double(events - last_events) / dt,
                double(hits - last_hits) / dt, per_domain);
  if (terminal)
    std::fprintf(stderr, "\r\033[K%s", line.c_str());
  else
    spdlog::info("{}", line);
  last_events = events;
  last_hits = hits;
  last = now;
}

/// The summary in a stable order: domains by name and id (sessions of one domain in the
/// order they ran), each one's breakpoints by view, address and name.
void sort_for_people(std::vector<domain_report>& reports) {
  std::stable_sort(reports.begin(), reports.end(), [](const auto& a, const auto& b) {
    return std::tie(a.name, a.id) < std::tie(b.name, b.id);
  });
  for (auto& r : reports)
    std::sort(r.breakpoints.begin(), r.breakpoints.end(), [](const auto& a, const auto& b) {
      return std::tie(a.view, a.pa, a.name) < std::tie(b.view, b.pa, b.name);
    });
}

void reload(engine& eng, const run_options& opts, const config& running) {
  service_notify("RELOADING=1");
  auto fail = [&](const std::string& why) {
    spdlog::error("{}", why);
    eng.count_reload(false);
    service_notify("READY=1");
  };
  if (!opts.reread) {
    spdlog::info("SIGHUP: the built-in demo has no config file to reload");
    service_notify("READY=1");
    return;
  }
  auto next = opts.reread();
  if (!next)
    return fail("reload rejected, the running configuration stays:\n" + context_of(next.error()));
  if (!next->warnings.empty())
    spdlog::warn("{}", next->warnings);
  if (next->driver != running.driver || !next->engine.same_settings(running.engine))
    spdlog::warn("reload: the driver, [engine] and [metrics] take effect at the next start only");
  if (auto err = eng.reload(next->engine))
    return fail("reload: " + render(err));
  eng.count_reload(true);
  spdlog::info("reload applied");
  service_notify("READY=1");
}

void print_summary(const std::vector<domain_report>& reports) {
  std::fprintf(stderr, "\n%-16s %6s %12s %10s %10s %8s %8s %8s  %s\n", "domain", "id", "events",
               "hits", "nbrs", "stale", "bad", "calls", "");
  for (auto& r : reports)
    std::fprintf(stderr, "%-16s %6u %12llu %10llu %10llu %8llu %8llu %8llu  %s\n", r.name.c_str(),
                 r.id, (unsigned long long)r.totals.events, (unsigned long long)r.totals.hits,
                 (unsigned long long)r.totals.neighbours, (unsigned long long)r.totals.stale,
                 (unsigned long long)r.totals.malformed, (unsigned long long)r.access_calls,
                 !r.error.empty() ? r.error.c_str()
                 : r.died         ? "died"
                                  : "");
  std::fprintf(stderr, "\n%-16s %-24s %6s %12s %10s\n", "domain", "breakpoint", "view", "hits",
               "filtered");
  for (auto& r : reports) {
    auto row = [&](const breakpoint_count& bp, const char* note) {
      std::fprintf(stderr, "%-16s %-24s %6u %12llu %10llu%s\n", r.name.c_str(), bp.name.c_str(),
                   unsigned(bp.view), (unsigned long long)bp.hits, (unsigned long long)bp.filtered,
                   note);
    };
    for (auto& bp : r.breakpoints)
      row(bp, bp.pending ? "  pending: its page is not mapped" : "");
    for (auto& bp : r.removed)
      row(bp, "  removed by a reload");
  }
}

/// SIGUSR2's answer beside the progress line: every breakpoint with its hits so far, one log
/// entry per domain (removed ones marked).
void log_breakpoints(engine& eng) {
  auto reports = eng.status();
  sort_for_people(reports);
  for (auto& r : reports) {
    std::string list;
    auto add = [&](const breakpoint_count& bp, const char* note) {
      list += (list.empty() ? "" : ", ") + bp.name + " " + std::to_string(bp.hits) + note;
    };
    size_t pending = 0;
    for (auto& bp : r.breakpoints) {
      add(bp, bp.pending ? " (pending)" : "");
      pending += bp.pending;
    }
    for (auto& bp : r.removed)
      add(bp, " (removed by a reload)");
    spdlog::info("status: domain {} ({}): {} armed, {} pending, {} hits: {}", r.name, r.id,
                 r.breakpoints.size() - pending, pending, r.totals.hits,
                 list.empty() ? "no breakpoints" : list);
  }
}

/// The sinks' table; true if any lost records.
bool print_sinks(const std::vector<sink_book::totals>& sinks) {
  if (sinks.empty())
    return false;
  bool lost = false;
  std::fprintf(stderr, "\n%-16s %12s %12s %12s\n", "sink", "written", "failed", "dropped");
  for (auto& s : sinks) {
    std::fprintf(stderr, "%-16s %12llu %12llu %12llu%s\n", s.name.c_str(),
                 (unsigned long long)s.written, (unsigned long long)s.errors,
                 (unsigned long long)s.dropped, s.lost() ? "  RECORDS LOST" : "");
    lost |= s.lost() > 0;
  }
  if (lost)
    std::fprintf(stderr, "hit records were lost: see vmitap_sink_records_total and the log\n");
  return lost;
}

}  // namespace

int run(const config& cfg, const run_options& opts) {
  auto* be = find_backend(cfg.driver);
  if (!cfg.warnings.empty())
    spdlog::warn("{}", cfg.warnings);
  auto instance = be->start(cfg);
  if (!instance) {
    spdlog::error("{}", context_of(instance.error()));
    return exit_code_of(instance.error());
  }
  engine eng{cfg.engine, instance->driver, instance->reserved_cores, opts.handlers};
  if (auto err = eng.start()) {
    spdlog::error("{}", context_of(err));
    eng.stop();
    return exit_code_of(err);
  }
  std::fprintf(stderr, "%s\n", opts.title.c_str());
  if (auto where = parse_listen(cfg.engine.metrics_listen); where && eng.metrics_port() != 0) {
    where->port = eng.metrics_port();
    std::fprintf(stderr, "metrics: http://%s/metrics\n", where->authority().c_str());
  }
  service_notify("READY=1");
  auto t0 = clock_type::now();
  auto last = t0;
  uint64_t last_events = 0, last_hits = 0;
  std::string why = "the guests finished";
  for (;;) {
    // Woken at least every 100 ms, and at --max-seconds exactly.
    auto wait = std::chrono::milliseconds(100);
    if (opts.max_duration)
      wait = std::clamp(
        std::chrono::ceil<std::chrono::milliseconds>(t0 + *opts.max_duration - clock_type::now()),
        std::chrono::milliseconds(1), wait);
    auto sig = wait_signal(wait);
    auto action = action_of(sig);
    if (action == signal_action::stop) {
      why = std::string("stopped by ") + signal_name(sig);
      break;
    }
    if (action == signal_action::reload)
      reload(eng, opts, cfg);
    if (action == signal_action::reopen) {
      spdlog::info("SIGUSR1: reopening the hit files");
      if (auto err = eng.reopen_sinks())
        spdlog::error("reopen: {}", render(err));
    }
    auto now = clock_type::now();
    if (action == signal_action::status ||
        (opts.status_line && now - last >= std::chrono::seconds(1)))
      print_progress(eng, t0, last_events, last_hits, last,
                     opts.status_line && action != signal_action::status);
    if (action == signal_action::status)
      log_breakpoints(eng);
    if (instance->truth && instance->truth->finished())
      break;
    if (opts.max_duration && now - t0 >= *opts.max_duration) {
      why = "--max-seconds reached";
      break;
    }
  }
  service_notify("STOPPING=1");
  if (opts.status_line)
    std::fputc('\n', stderr);
  auto elapsed = std::chrono::duration<double>(clock_type::now() - t0).count();
  auto reports = eng.stop();
  sort_for_people(reports);
  uint64_t events = 0;
  bool errors = false;
  for (auto& r : reports) {
    events += r.totals.events;
    errors |= !r.error.empty();
  }
  std::fprintf(stderr, "\n%llu events in %.2f s: %.0f events/s (%s)\n", (unsigned long long)events,
               elapsed, double(events) / elapsed, why.c_str());
  int code = errors ? exit_code::failed : exit_code::ok;
  if (instance->truth)
    code = instance->truth->verify(reports, stderr) ? exit_code::ok : exit_code::failed;
  else
    print_summary(reports);
  if (print_sinks(eng.sink_totals()) && code == exit_code::ok)
    code = exit_code::records_lost;
  if (eng.abandoned() || eng.handler_calls_running() > 0) {
    // Threads stuck in a driver call or a blocking handler still use the engine: exit
    // without destroying it. Only the driver call is a failure of the run.
    spdlog::default_logger()->flush();
    std::fflush(nullptr);
    std::_Exit(eng.abandoned() ? exit_code::failed : code);
  }
  return code;
}

}  // namespace vmitap
