#pragma once

// A small HTTP server for Prometheus: GET /metrics serves the text exposition, GET / a
// landing page that links to it. One thread serves every connection at once (non-blocking,
// poll), each with its own deadline, so an idle, half-open or slow client never delays
// another's scrape; IPv4 and IPv6; a port in use is reported as such.

#include "engine/listen_address.hpp"

#include <caf/error.hpp>

#include <atomic>
#include <functional>
#include <thread>

namespace vmitap {

class http_exporter {
public:
  using render_fn = std::function<std::string()>;

  /// Binds and starts serving; the error (ec::listen_failed) says which port on which address
  /// and why ("port 10474 on 127.0.0.1 is in use").
  static caf::expected<std::unique_ptr<http_exporter>> start(const listen_address& where,
                                                             render_fn render);
  ~http_exporter();
  http_exporter(const http_exporter&) = delete;
  http_exporter& operator=(const http_exporter&) = delete;

  /// The port it listens on (the one chosen, for port 0).
  uint16_t port() const { return port_; }
  const listen_address& address() const { return where_; }

private:
  struct connection;

  http_exporter(listen_address where, int fd, int stop_fd, render_fn render);
  void loop();
  /// Reads what `c` sent; once its request is whole, queues the answer. False: close it.
  bool receive(connection& c);
  /// Writes what `c` can take now. False: done or broken, close it.
  bool transmit(connection& c);

  listen_address where_;
  int fd_;
  int stop_fd_;
  uint16_t port_ = 0;
  render_fn render_;
  std::thread thread_;
};

}  // namespace vmitap
