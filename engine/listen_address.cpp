#include "engine/listen_address.hpp"

#include "drivers/error.hpp"

#include <arpa/inet.h>
#include <charconv>

namespace vmitap {

std::string listen_address::authority() const {
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

caf::expected<listen_address> parse_listen(const std::string& text) {
  auto bad = [&](const std::string& why) {
    return make_error(ec::invalid_argument,
                      "\"" + text + "\": " + why + " (expected host:port, [ipv6]:port or a port)");
  };
  listen_address out;
  std::string port_text;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return bad("an IPv6 address in brackets must be followed by :port");
    out.host = text.substr(1, close - 1);
    port_text = text.substr(close + 2);
  } else if (auto colon = text.rfind(':'); colon != std::string::npos) {
    out.host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
    if (out.host.find(':') != std::string::npos)
      return bad("an IPv6 address needs brackets");
  } else {
    out.host = "127.0.0.1";  // a bare port: loopback, never every interface by surprise
    port_text = text;
  }
  if (out.host == "localhost")
    out.host = "127.0.0.1";
  unsigned port = 0;
  auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || ec != std::errc{} || end != port_text.data() + port_text.size())
    return bad("the port is not a number");
  if (port > 65535)
    return bad("the port must be 0 to 65535");
  out.port = uint16_t(port);
  in_addr a4{};
  in6_addr a6{};
  if (inet_pton(AF_INET, out.host.c_str(), &a4) == 1)
    out.v6 = false;
  else if (inet_pton(AF_INET6, out.host.c_str(), &a6) == 1)
    out.v6 = true;
  else
    return bad("the host must be an IP address or localhost");
  return out;
}

}  // namespace vmitap
