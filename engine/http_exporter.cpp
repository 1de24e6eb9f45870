#include "engine/http_exporter.hpp"

#include "drivers/error.hpp"

#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

namespace vmitap {

namespace {

constexpr int request_deadline_ms = 2000;
constexpr size_t max_request = 8192;

const char* landing_page =
  "<!DOCTYPE html>\n<html><head><title>vmitap exporter</title></head><body>\n"
  "<h1>vmitap</h1>\n<p>Exact memory breakpoints for Xen guests.</p>\n"
  "<p><a href=\"/metrics\">Metrics</a></p>\n</body></html>\n";

void send_all(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    auto n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return;
    done += size_t(n);
  }
}

std::string reply(int code, const char* status, const char* type, const std::string& body) {
  return "HTTP/1.1 " + std::to_string(code) + " " + status + "\r\nContent-Type: " + type
         + "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n"
         + body;
}

}  // namespace

caf::expected<std::unique_ptr<http_exporter>> http_exporter::start(const listen_address& where,
                                                                   render_fn render) {
  auto failed = [&](const char* call, int err) {
    std::string why = err == EADDRINUSE ? "is in use"
                      : err == EADDRNOTAVAIL
                        ? "cannot be bound: no such local address"
                        : std::string("cannot be bound: ") + call + ": " + std::strerror(err);
    return make_error(ec::listen_failed, "metrics: port " + std::to_string(where.port) + " on "
                                           + where.host + " " + why);
  };
  int fd = ::socket(where.v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
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
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0 || ::listen(fd, 16) != 0) {
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

void http_exporter::loop() {
  for (;;) {
    pollfd fds[2] = {{fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0 && errno != EINTR)
      return;
    if (fds[1].revents)
      return;
    if (!(fds[0].revents & POLLIN))
      continue;
    int client = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0)
      continue;
    serve(client);
    ::close(client);
  }
}

void http_exporter::serve(int client) {
  timeval deadline{request_deadline_ms / 1000, 0};  // a client that stops reading is dropped
  setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &deadline, sizeof deadline);
  std::string request;
  char buf[2048];
  // Read the request head within the deadline; the body of a GET is ignored.
  while (request.find("\r\n\r\n") == std::string::npos && request.size() < max_request) {
    pollfd p{client, POLLIN, 0};
    if (::poll(&p, 1, request_deadline_ms) <= 0)
      return;
    auto n = ::recv(client, buf, sizeof buf, 0);
    if (n <= 0)
      return;
    request.append(buf, size_t(n));
  }
  auto line_end = request.find("\r\n");
  auto line = request.substr(0, line_end);
  auto sp1 = line.find(' ');
  auto sp2 = line.find(' ', sp1 + 1);
  if (sp1 == std::string::npos || sp2 == std::string::npos) {
    send_all(client, reply(400, "Bad Request", "text/plain", "bad request\n"));
    return;
  }
  auto method = line.substr(0, sp1);
  auto target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  target = target.substr(0, target.find('?'));
  if (method != "GET" && method != "HEAD") {
    send_all(client, reply(405, "Method Not Allowed", "text/plain", "only GET\n"));
    return;
  }
  std::string response;
  if (target == "/metrics")
    response = reply(200, "OK", "text/plain; version=0.0.4; charset=utf-8", render_());
  else if (target == "/")
    response = reply(200, "OK", "text/html; charset=utf-8", landing_page);
  else
    response = reply(404, "Not Found", "text/plain", "not found: try /metrics\n");
  if (method == "HEAD")
    response = response.substr(0, response.find("\r\n\r\n") + 4);
  send_all(client, response);
}

}  // namespace vmitap
