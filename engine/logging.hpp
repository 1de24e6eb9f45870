#pragma once

// Where vmitap's log goes: to the journal when systemd runs it (its stderr is the journal's
// stream: JOURNAL_STREAM names it), one entry per event with its priority and no timestamp
// of ours; else to stderr with a timestamp and a level, as a person at a terminal reads it.

#include <memory>

namespace spdlog {
class logger;
}

namespace vmitap {

/// True if stderr is the journal stream systemd gave this process.
bool stderr_is_journal();
/// The logger vmitap uses, for stderr_is_journal() or a terminal; installs it as default.
std::shared_ptr<spdlog::logger> setup_logging();

}  // namespace vmitap
