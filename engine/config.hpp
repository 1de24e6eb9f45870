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

/// The same, from text (tests; the built-in demo); `path` only names it in messages.
caf::expected<config> parse_config(std::string_view text, const std::string& path,
                                   const handler_registry* handlers = nullptr);

/// The topology the config would build, for `vmitap check`.
std::string describe(const config& cfg);

}  // namespace vmitap
