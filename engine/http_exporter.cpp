#include "engine/http_exporter.hpp"

#include "drivers/error.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include <memory>
#include <string>
#include <vector>

namespace vmitap {

namespace {

/// A client has this long to send its request, and this long in all to take the answer: a
/// scrape of a few hundred KiB takes milliseconds, Prometheus's timeout is 10 s.
constexpr auto request_deadline = std::chrono::seconds(2);
constexpr auto connection_deadline = std::chrono::seconds(10);
constexpr size_t max_request = 8192;
/// Connections served at once; more wait in the listen backlog.
constexpr size_t max_connections = 256;

const char* landing_page =
  "<!DOCTYPE html>\n<html><head><title>vmitap exporter</title></head><body>\n"
  "<h1>vmitap</h1>\n<p>Exact memory breakpoints for Xen guests.</p>\n"
  "<p><a href=\"/metrics\">Metrics</a></p>\n</body></html>\n";

std::string reply(int code, const char* status, const char* type, const std::string& body) {
  return "HTTP/1.1 " + std::to_string(code) + " " + status + "\r\nContent-Type: " + type +
         "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" +
         body;
}

}  // namespace

caf::expected<std::unique_ptr<http_exporter>> http_exporter::start(const listen_address& where,
                                                                   render_fn render) {
  auto failed = [&](const char* call, int err) {
    std::string why = err == EADDRINUSE ? "is in use"
                      : err == EADDRNOTAVAIL
                        ? "cannot be bound: no such local address"
                        : std::string("cannot be bound: ") + call + ": " + std::strerror(err);
    return make_error(ec::listen_failed, "metrics: port " + std::to_string(where.port) + " on " +
                                           where.host + " " + why);
  };
  int fd = ::socket(where.v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    return failed("socket", errno);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_storage addr{};
  socklen_t len = 0;
  if (where.v6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&addr);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(where.port);
    inet_pton(AF_INET6, where.host.c_str(), &a->sin6_addr);
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    len = sizeof *a;
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&addr);
    a->sin_family = AF_INET;
    a->sin_port = htons(where.port);
    inet_pton(AF_INET, where.host.c_str(), &a->sin_addr);
    len = sizeof *a;
  }
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0 || ::listen(fd, 128) != 0) {
    int err = errno;
    ::close(fd);
    return failed("bind", err);
  }
  int stop_fd = eventfd(0, EFD_CLOEXEC);
  if (stop_fd < 0) {
    int err = errno;
    ::close(fd);
    return failed("eventfd", err);
  }
  return std::unique_ptr<http_exporter>(new http_exporter(where, fd, stop_fd, std::move(render)));
}

http_exporter::http_exporter(listen_address where, int fd, int stop_fd, render_fn render) :
  where_(std::move(where)), fd_(fd), stop_fd_(stop_fd), render_(std::move(render)) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(where_.v6 ? reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port
                          : reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  where_.port = port_;
  thread_ = std::thread([this] { loop(); });
}

http_exporter::~http_exporter() {
  uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(stop_fd_, &one, sizeof one);
  thread_.join();
  ::close(fd_);
  ::close(stop_fd_);
}

struct http_exporter::connection {
  int fd = -1;
  std::string in;
  std::string out;
  size_t sent = 0;
  bool answered = false;  // `out` holds the whole answer
  std::chrono::steady_clock::time_point request_by, done_by;
};

void http_exporter::loop() {
  std::vector<std::unique_ptr<connection>> conns;
  auto close_at = [&](size_t i) {
    ::close(conns[i]->fd);
    conns[i] = std::move(conns.back());
    conns.pop_back();
  };
  std::vector<pollfd> fds;
  for (;;) {
    auto now = std::chrono::steady_clock::now();
    // Deadlines first: what is past them goes, and the next one bounds the wait.
    auto next = now + connection_deadline;
    for (size_t i = conns.size(); i-- > 0;) {
      auto& c = *conns[i];
      auto by = c.answered ? c.done_by : std::min(c.request_by, c.done_by);
      if (now >= by)
        close_at(i);
      else
        next = std::min(next, by);
    }
    fds.clear();
    fds.push_back({stop_fd_, POLLIN, 0});
    fds.push_back({fd_, short(conns.size() < max_connections ? POLLIN : 0), 0});
    for (auto& c : conns)
      fds.push_back({c->fd, short(c->answered ? POLLOUT : POLLIN), 0});
    auto wait = std::chrono::ceil<std::chrono::milliseconds>(next - now).count();
    if (::poll(fds.data(), fds.size(), int(std::max<int64_t>(wait, 1))) < 0 && errno != EINTR)
      return;
    if (fds[0].revents)
      break;
    // Clients before the listener: `fds` and `conns` stay in step while some close.
    for (size_t i = conns.size(); i-- > 0;) {
      auto revents = fds[i + 2].revents;
      if (!revents)
        continue;
      auto& c = *conns[i];
      bool keep = (revents & (POLLERR | POLLNVAL)) == 0;
      if (keep && !c.answered && (revents & (POLLIN | POLLHUP)))
        keep = receive(c);
      if (keep && c.answered)
        keep = transmit(c);
      if (!keep)
        close_at(i);
    }
    if (fds[1].revents & POLLIN) {
      for (int client;
           conns.size() < max_connections &&
           (client = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK)) >= 0;) {
        auto c = std::make_unique<connection>();
        c->fd = client;
        c->request_by = std::chrono::steady_clock::now() + request_deadline;
        c->done_by = std::chrono::steady_clock::now() + connection_deadline;
        conns.push_back(std::move(c));
      }
    }
  }
  for (auto& c : conns)
    ::close(c->fd);
}

bool http_exporter::receive(connection& c) {
  char buf[2048];
  bool closed = false;  // the client sent all it will (a request and a FIN may come at once)
  for (;;) {
    auto n = ::recv(c.fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      break;
    if (n < 0)
      return false;
    if (n == 0) {
      closed = true;
      break;
    }
    c.in.append(buf, size_t(n));
    if (c.in.size() >= max_request)
      break;
  }
  // The request head is what matters; the body of a GET is ignored.
  auto head_end = c.in.find("\r\n\r\n");
  if (head_end == std::string::npos && c.in.size() < max_request)
    return !closed;  // more to come, unless the client is done sending
  auto line = c.in.substr(0, c.in.find("\r\n"));
  auto sp1 = line.find(' ');
  auto sp2 = sp1 == std::string::npos ? sp1 : line.find(' ', sp1 + 1);
  c.answered = true;
  if (head_end == std::string::npos || sp2 == std::string::npos) {
    c.out = reply(400, "Bad Request", "text/plain", "bad request\n");
    return true;
  }
  auto method = line.substr(0, sp1);
  auto target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  target = target.substr(0, target.find('?'));
  if (method != "GET" && method != "HEAD") {
    c.out = reply(405, "Method Not Allowed", "text/plain", "only GET\n");
    return true;
  }
  if (target == "/metrics")
    c.out = reply(200, "OK", "text/plain; version=0.0.4; charset=utf-8", render_());
  else if (target == "/")
    c.out = reply(200, "OK", "text/html; charset=utf-8", landing_page);
  else
    c.out = reply(404, "Not Found", "text/plain", "not found: try /metrics\n");
  if (method == "HEAD")
    c.out.resize(c.out.find("\r\n\r\n") + 4);
  return true;
}

bool http_exporter::transmit(connection& c) {
  while (c.sent < c.out.size()) {
    auto n = ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      return true;  // the client reads slowly: on at the next POLLOUT, until its deadline
    if (n <= 0)
      return false;
    c.sent += size_t(n);
  }
  return false;  // all sent: Connection: close
}

}  // namespace vmitap
