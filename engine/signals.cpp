#include "engine/signals.hpp"

#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>

namespace vmitap {

namespace {

sigset_t handled() {
  sigset_t set;
  sigemptyset(&set);
  for (int sig : {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGALRM, SIGVTALRM, SIGPROF,
                  SIGXCPU, SIGSTKFLT, SIGIO, SIGPWR})
    sigaddset(&set, sig);
  for (int sig = SIGRTMIN; sig <= SIGRTMAX; ++sig)
    sigaddset(&set, sig);
  return set;
}

}  // namespace

void block_signals() {
  auto set = handled();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  std::signal(SIGXFSZ, SIG_IGN);
}

void unblock_signals() {
  auto set = handled();
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
}

int wait_signal(std::chrono::milliseconds timeout) {
  auto set = handled();
  timespec ts{};
  ts.tv_sec = timeout.count() / 1000;
  ts.tv_nsec = (timeout.count() % 1000) * 1'000'000;
  int sig = sigtimedwait(&set, nullptr, &ts);
  return sig > 0 ? sig : 0;
}

signal_action action_of(int sig) {
  switch (sig) {
    case 0:
      return signal_action::none;
    case SIGHUP:
      return signal_action::reload;
    case SIGUSR1:
      return signal_action::reopen;
    case SIGUSR2:
      return signal_action::status;
    default:
      return signal_action::stop;
  }
}

const char* signal_name(int sig) {
  static thread_local char buf[32];
  if (const char* abbrev = sigabbrev_np(sig)) {
    std::snprintf(buf, sizeof buf, "SIG%s", abbrev);
    return buf;
  }
  std::snprintf(buf, sizeof buf, "signal %d", sig);
  return buf;
}

}  // namespace vmitap
