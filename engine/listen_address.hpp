#pragma once

// Where the metrics exporter listens: "host:port", "[v6 address]:port", or a bare port
// (loopback). The host must be an IP address or "localhost"; port 0 means any free port.

#include <caf/expected.hpp>

#include <cstdint>
#include <string>

namespace vmitap {

struct listen_address {
  std::string host;  ///< an IPv4 or IPv6 literal, without brackets
  uint16_t port = 0;
  bool v6 = false;
  /// "127.0.0.1:10474", "[::1]:10474": what a URL needs.
  std::string authority() const;
};

/// Parses `text`; the error (ec::invalid_argument) says what was expected.
caf::expected<listen_address> parse_listen(const std::string& text);

}  // namespace vmitap
