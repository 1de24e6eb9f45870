#include "engine/logging.hpp"

#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <sys/stat.h>
#include <syslog.h>
#include <systemd/sd-journal.h>
#include <unistd.h>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>

namespace vmitap {

namespace {

int priority_of(spdlog::level::level_enum l) {
  switch (l) {
    case spdlog::level::trace:
    case spdlog::level::debug:
      return LOG_DEBUG;
    case spdlog::level::info:
      return LOG_INFO;
    case spdlog::level::warn:
      return LOG_WARNING;
    case spdlog::level::err:
      return LOG_ERR;
    case spdlog::level::critical:
      return LOG_CRIT;
    default:
      return LOG_INFO;
  }
}

/// One journal entry per log call with its priority: through the journal's socket, multi-line
/// messages whole; where there is no socket to reach (sd_journal_send then drops in silence),
/// on stderr, the journal's stream, with a `<N>` priority prefix and newlines folded.
class journal_sink final : public spdlog::sinks::base_sink<std::mutex> {
public:
  journal_sink() : native_(access("/run/systemd/journal/socket", W_OK) == 0) {}

protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    std::string text(msg.payload.data(), msg.payload.size());
    int prio = priority_of(msg.level);
    if (native_) {
      sd_journal_send("MESSAGE=%s", text.c_str(), "PRIORITY=%d", prio, "SYSLOG_IDENTIFIER=vmitap",
                      nullptr);
      return;
    }
    for (auto& c : text)
      if (c == '\n')
        c = ' ';
    std::fprintf(stderr, "<%d>%s\n", prio, text.c_str());
  }
  void flush_() override { std::fflush(stderr); }

private:
  bool native_;
};

}  // namespace

bool stderr_is_journal() {
  // systemd sets JOURNAL_STREAM=DEV:INODE of the stream it connected; a child whose stderr was
  // redirected since must not mistake it.
  const char* stream = std::getenv("JOURNAL_STREAM");
  struct stat st {};
  if (!stream || fstat(STDERR_FILENO, &st) != 0)
    return false;
  unsigned long long dev = 0, ino = 0;
  if (std::sscanf(stream, "%llu:%llu", &dev, &ino) != 2)
    return false;
  return dev == st.st_dev && ino == st.st_ino;
}

std::shared_ptr<spdlog::logger> setup_logging() {
  std::shared_ptr<spdlog::logger> logger;
  if (stderr_is_journal()) {
    logger = std::make_shared<spdlog::logger>("vmitap", std::make_shared<journal_sink>());
    logger->set_pattern("%v");  // the journal keeps time, priority and origin itself
  } else {
    logger = spdlog::stderr_color_mt("vmitap");
  }
  spdlog::set_default_logger(logger);
  return logger;
}

}  // namespace vmitap
