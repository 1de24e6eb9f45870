#pragma once

// What every harness checks its target's output with: a broken invariant aborts (libFuzzer
// saves the input), and text meant for a log line must be UTF-8.

#include <cstdint>
#include <cstdlib>
#include <string>

namespace vmitap::fuzz {

inline void require(bool ok) {
  if (!ok)
    std::abort();
}

inline bool valid_utf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    auto c = uint8_t(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size())
      return false;
    for (size_t k = 1; k < n; ++k)
      if ((uint8_t(s[i + k]) >> 6) != 2)
        return false;
    i += n;
  }
  return true;
}

}  // namespace vmitap::fuzz
