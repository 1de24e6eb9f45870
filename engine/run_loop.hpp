#pragma once

// The one loop behind `vmitap run` and `vmitap demo`, whatever the driver: start the backend
// and the engine, act on signals (stop, reload, reopen, status), show progress on a
// terminal, stop, and summarise. What only the simulated hypervisor can do (finish when its
// guests have, verify every hit) comes from the backend's optional ground truth.

#include "engine/config.hpp"

#include <functional>
#include <optional>

namespace vmitap {

struct run_options {
  std::optional<std::chrono::milliseconds> max_duration;  ///< none: until a signal says stop
  /// SIGHUP: reads the config again (none: there is nothing to reload, as for the demo).
  std::function<caf::expected<config>()> reread;
  std::string title;         ///< the first line on stderr
  bool status_line = false;  ///< a compact status line each second (stderr is a terminal)
  /// What breakpoints' `handler` keys name: the same registry the config was loaded with.
  handler_registry_ptr handlers;
};

/// Runs `cfg`; returns the process's exit code (engine/exit_codes.hpp).
int run(const config& cfg, const run_options& opts);

}  // namespace vmitap
