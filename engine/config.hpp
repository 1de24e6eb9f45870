#pragma once

// The config file (TOML): which driver, which domains with which views and breakpoints, where
// hits go, metrics, threads, and the driver's own section ([sim] or [xen]). Every key is
// documented in examples/*.toml and the README. Errors name file, line, column, the key and
// what was expected.

#include "actors/handlers/handler_registry.hpp"
#include "engine/engine_config.hpp"

#include <any>
#include <string>

namespace vmitap {

struct config {
  std::string path;
  std::string driver = "sim";  ///< a name from the backend table (engine/backends.hpp)
  engine_config engine;
  std::any backend;      ///< the driver's own section, as its backend reads it
  std::string warnings;  ///< one line per warning, "file:line:column: key: warning: …"
};

/// Reads and validates `path`. On failure the error (ec::config_invalid) carries one line per
/// problem: "file:line:column: key: message". A breakpoint's `handler` must name one of
/// `handlers` (none given: no handler is known).
caf::expected<config> load_config(const std::string& path,
                                  const handler_registry* handlers = nullptr);

/// The same, from text (tests; the built-in demo); `path` names it in messages. Relative
/// profile paths are `base_dir`'s (by default `path`'s directory, as for a file).
caf::expected<config> parse_config(std::string_view text, const std::string& path,
                                   const handler_registry* handlers = nullptr,
                                   const std::string& base_dir = {});

/// Only the host part of a config: [engine], sinks and the driver's section, not the
/// [[domain]] entries (whose profiles may not exist yet: `vmitap sim-profile` writes them).
caf::expected<config> load_host_config(const std::string& path);
caf::expected<config> parse_host_config(std::string_view text, const std::string& path);

/// The topology the config would build, for `vmitap check`.
std::string describe(const config& cfg);

}  // namespace vmitap
