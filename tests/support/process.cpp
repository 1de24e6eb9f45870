#include "tests/support/process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>
#include <csignal>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

namespace vmitap::testing {

command_result run_command(const std::string& binary, std::vector<std::string> args,
                           std::function<void(pid_t, const output_fn&)> during,
                           std::vector<std::string> env, std::vector<int> pending) {
  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0)
    return {};
  pid_t pid = fork();
  if (pid == 0) {
    dup2(out[1], STDOUT_FILENO);
    dup2(err[1], STDERR_FILENO);
    for (auto& e : env)
      putenv(e.data());
    // As a service manager starts a service: every signal at its default action. A shell
    // that ran these tests in the background ignores SIGINT and SIGQUIT, and an ignored
    // signal that arrives before vmitap's main() blocks it is discarded by the kernel.
    for (int sig = 1; sig < NSIG; ++sig)
      if (sig != SIGKILL && sig != SIGSTOP)
        std::signal(sig, SIG_DFL);
    sigset_t set;
    sigemptyset(&set);
    for (int sig : pending)
      sigaddset(&set, sig);
    sigprocmask(SIG_BLOCK, &set, nullptr);  // a blocked signal's mask survives exec
    for (int sig : pending)
      raise(sig);
    std::vector<char*> argv{const_cast<char*>(binary.c_str())};
    for (auto& a : args)
      argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(binary.c_str(), argv.data());
    _exit(127);
  }
  close(out[1]);
  close(err[1]);
  command_result r;
  std::mutex mutex;  // guards r.out and r.err while the child runs
  // Read both pipes while `during` runs, so a chatty child never blocks on a full pipe.
  std::thread reader([&] {
    pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
    int open = 2;
    char buf[8192];
    while (open > 0 && poll(fds, 2, -1) > 0) {
      for (int i = 0; i < 2; ++i) {
        if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP)))
          continue;
        auto n = read(fds[i].fd, buf, sizeof buf);
        if (n > 0) {
          std::lock_guard g{mutex};
          (i == 0 ? r.out : r.err).append(buf, size_t(n));
        } else {
          close(fds[i].fd);
          fds[i].fd = -1;
          --open;
        }
      }
    }
  });
  if (during)
    during(pid, [&] {
      std::lock_guard g{mutex};
      return r.out + r.err;
    });
  reader.join();
  int status = 0;
  waitpid(pid, &status, 0);
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

bool wait_for_text(const std::string& path, const std::string& text, int timeout_ms) {
  for (int waited = 0; waited < timeout_ms; waited += 10) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    if (s.str().find(text) != std::string::npos)
      return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

bool wait_for_output(const output_fn& output, const std::string& text, int timeout_ms) {
  for (int waited = 0; waited < timeout_ms; waited += 10) {
    if (output().find(text) != std::string::npos)
      return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

}  // namespace vmitap::testing
