#pragma once

// Runs the vmitap binary as a user would: arguments in, exit code and output back, signals
// sent while it runs.

#include <functional>
#include <string>
#include <vector>

#include <sys/types.h>

namespace vmitap::testing {

struct command_result {
  int rc = -1;      ///< the exit code, or 128 + signal
  std::string out;  ///< stdout
  std::string err;  ///< stderr
  std::string all() const { return out + err; }
};

/// What the child has written so far (stdout and stderr, as one text).
using output_fn = std::function<std::string()>;

/// Runs `binary args…`; `during` runs (with the child's pid and its output so far) while it
/// does. `env` entries ("NAME=value") are added to the child's environment. `pending`
/// signals are raised in the child, blocked, before it executes the binary: they are
/// pending when its main() starts.
command_result run_command(const std::string& binary, std::vector<std::string> args,
                           std::function<void(pid_t, const output_fn&)> during = {},
                           std::vector<std::string> env = {}, std::vector<int> pending = {});

/// Waits until `output()` contains `text` (or `timeout_ms` passed). True if it does.
bool wait_for_output(const output_fn& output, const std::string& text, int timeout_ms = 30000);

/// Waits until `path` contains `text` (or `timeout_ms` passed). True if it does.
bool wait_for_text(const std::string& path, const std::string& text, int timeout_ms = 20000);

}  // namespace vmitap::testing
