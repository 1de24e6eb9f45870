// The fake's libxenstore: domain names, and watches on a pipe that fire once when set and
// whenever the sim starts or stops a domain.

#include "tests/support/fake_xen_internal.hpp"

#include <fcntl.h>
#include <unistd.h>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace vmitap::testing {

// xenstore
struct xs_handle* fake_xen::impl::xs_open(unsigned long) {
  if (int err = enter("xs_open")) {
    errno = err;
    return nullptr;
  }
  auto h = std::make_unique<xs>();
  int fds[2];
  if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0)
    return nullptr;
  h->rd = fds[0];
  h->wr = fds[1];
  std::lock_guard g{f().mutex_};
  f().xs_handles_.insert(h.get());
  return reinterpret_cast<struct xs_handle*>(h.release());
}

void fake_xen::impl::xs_close(struct xs_handle* h) {
  std::unique_ptr<xs> x{&store(h)};
  std::lock_guard g{f().mutex_};
  f().xs_handles_.erase(x.get());
  close(x->rd);
  close(x->wr);
}

void* fake_xen::impl::xs_read(struct xs_handle*, xs_transaction_t, const char* path,
                              unsigned int* len) {
  unsigned id = 0;
  char tail[32] = {};
  if (std::sscanf(path, "/local/domain/%u/%31s", &id, tail) == 2 && std::string(tail) == "name") {
    if (auto dom = f().hv_->find(id)) {
      auto name = dom->info().name;
      auto* out = static_cast<char*>(std::malloc(name.size() + 1));
      std::memcpy(out, name.c_str(), name.size() + 1);
      if (len)
        *len = unsigned(name.size());
      return out;
    }
  }
  errno = ENOENT;
  return nullptr;
}

void fake_xen::impl::queue_watch(xs& x, const std::string& path, const std::string& token) {
  x.events.emplace_back(path, token);
  char one = 1;
  [[maybe_unused]] auto n = write(x.wr, &one, 1);
}

bool fake_xen::impl::xs_watch(struct xs_handle* h, const char* path, const char* token) {
  if (int err = enter("xs_watch")) {
    errno = err;
    return false;
  }
  std::lock_guard g{f().mutex_};
  store(h).watches.emplace_back(path, token);
  queue_watch(store(h), path, token);  // a watch fires once when it is set
  return true;
}

bool fake_xen::impl::xs_unwatch(struct xs_handle* h, const char* path, const char* token) {
  std::lock_guard g{f().mutex_};
  return std::erase(store(h).watches, std::pair<std::string, std::string>(path, token)) > 0;
}

int fake_xen::impl::xs_fileno(struct xs_handle* h) {
  return store(h).rd;
}

char** fake_xen::impl::xs_check_watch(struct xs_handle* h) {
  std::lock_guard g{f().mutex_};
  auto& x = store(h);
  if (x.events.empty()) {
    errno = EAGAIN;
    return nullptr;
  }
  auto [path, token] = x.events.front();
  x.events.pop_front();
  char one;
  [[maybe_unused]] auto n = read(x.rd, &one, 1);
  // One allocation, as libxenstore makes it: the caller frees it with free().
  auto size = 2 * sizeof(char*) + path.size() + token.size() + 2;
  auto** out = static_cast<char**>(std::malloc(size));
  auto* text = reinterpret_cast<char*>(out + 2);
  std::memcpy(text, path.c_str(), path.size() + 1);
  std::memcpy(text + path.size() + 1, token.c_str(), token.size() + 1);
  out[XS_WATCH_PATH] = text;
  out[XS_WATCH_TOKEN] = text + path.size() + 1;
  return out;
}

void fake_xen::watch_event(bool started) {
  std::lock_guard g{mutex_};
  for (auto* x : xs_handles_)
    for (auto& [path, token] : x->watches)
      if (path == (started ? "@introduceDomain" : "@releaseDomain"))
        impl::queue_watch(*x, path, token);
}

}  // namespace vmitap::testing
