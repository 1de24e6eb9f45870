#pragma once

// Signals, handled synchronously by the run loop. `block_signals()` runs first thing in main,
// before any thread exists (threads inherit the mask): a signal that arrives while vmitap
// starts waits, pending, until the loop is ready to act on it. No signal kills vmitap with
// domains attached.

#include <chrono>

namespace vmitap {

enum class signal_action : uint8_t {
  none,
  stop,    ///< SIGTERM, SIGINT, SIGQUIT and every other terminating signal: detach and exit
  reload,  ///< SIGHUP: re-read the config
  reopen,  ///< SIGUSR1: reopen the hit files (logrotate's convention)
  status,  ///< SIGUSR2: log every domain's counts
};

/// Blocks every asynchronous signal vmitap acts on; SIGPIPE and SIGXFSZ are ignored (a write
/// then fails with EPIPE or EFBIG, which the sinks report and count).
void block_signals();
/// For commands that do not run the engine: signals act as usual again.
void unblock_signals();
/// Waits up to `timeout` for a blocked signal. Returns the signal number, or 0.
int wait_signal(std::chrono::milliseconds timeout);
signal_action action_of(int sig);
/// "SIGTERM".
const char* signal_name(int sig);

}  // namespace vmitap
