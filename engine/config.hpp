#pragma once

// The config file (TOML): which driver, which domains with which views and breakpoints, where
// hits go, metrics, threads, and the simulated hypervisor's guests. Every key is documented in
// examples/*.toml. Errors name file, line, column, the key and what was expected.

#include "drivers/sim/hypervisor.hpp"
#include "engine/engine.hpp"

#include <string>
#include <vector>

namespace vmitap {

struct config {
  std::string path;
  std::string driver = "sim";  ///< sim | xen
  engine_config engine;
  struct sim_section {
    std::chrono::nanoseconds exit_latency{0};
    std::vector<sim::domain_config> domains;
  } sim;
};

/// Reads and validates `path`. On failure the error (ec::config_invalid) carries one line per
/// problem: "file:line:column: key: message".
caf::expected<config> load_config(const std::string& path);

/// The same, from text (for tests); `path` only names it in messages.
caf::expected<config> parse_config(std::string_view text, const std::string& path);

/// The topology the config would build, for `vmitap check`.
std::string describe(const config& cfg);

}  // namespace vmitap
