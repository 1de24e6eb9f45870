#include "actors/model/captures.hpp"

#include <algorithm>
#include <charconv>
#include <cinttypes>
#include <cstdio>
#include <cstring>

namespace vmitap {

namespace {

using drv::translation_fault;

class expr_parser {
public:
  expr_parser(std::string_view text, drv::calling_convention cc) : text_(text), cc_(cc) {}

  expr_parse_result parse() {
    address_expr e;
    if (!expr(e))
      return {std::nullopt, error_, error_at_};
    skip_space();
    if (pos_ != text_.size())
      return {std::nullopt, "unexpected \"" + std::string(text_.substr(pos_, 1)) + "\"", pos_};
    return {std::move(e), {}, 0};
  }

private:
  bool fail(std::string msg, size_t at) {
    error_ = std::move(msg);
    error_at_ = at;
    return false;
  }
  void skip_space() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t'))
      ++pos_;
  }
  static bool word_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  }
  std::string_view word() {
    auto start = pos_;
    while (pos_ < text_.size() && word_char(text_[pos_]))
      ++pos_;
    return text_.substr(start, pos_ - start);
  }
  static std::optional<uint64_t> number(std::string_view w) {
    int base = 10;
    if (w.size() > 2 && w[0] == '0' && (w[1] == 'x' || w[1] == 'X')) {
      w.remove_prefix(2);
      base = 16;
    }
    uint64_t v = 0;
    auto [end, ec] = std::from_chars(w.data(), w.data() + w.size(), v, base);
    if (ec != std::errc{} || end != w.data() + w.size())
      return std::nullopt;
    return v;
  }

  bool expr(address_expr& e) {
    if (!term(e))
      return false;
    for (;;) {
      skip_space();
      if (pos_ == text_.size() || (text_[pos_] != '+' && text_[pos_] != '-'))
        return true;
      bool minus = text_[pos_++] == '-';
      skip_space();
      auto at = pos_;
      auto n = number(word());
      if (!n)
        return fail("expected a number after \"" + std::string(minus ? "-" : "+") + "\"", at);
      e.steps.push_back({address_expr::step::op::add, minus ? uint64_t(0) - *n : *n});
    }
  }

  bool term(address_expr& e) {
    skip_space();
    auto at = pos_;
    if (pos_ < text_.size() && text_[pos_] == '[') {
      // Bounded: the parser recurses per bracket, and a config is untrusted input.
      if (++depth_ > max_nesting)
        return fail("brackets nest at most " + std::to_string(max_nesting) + " deep", at);
      ++pos_;
      if (!expr(e))
        return false;
      --depth_;
      skip_space();
      if (pos_ == text_.size() || text_[pos_] != ']')
        return fail("expected \"]\"", pos_);
      ++pos_;
      e.steps.push_back({address_expr::step::op::load, 0});
      return true;
    }
    auto w = word();
    if (w.empty())
      return fail("expected a register, argN, a number or \"[\"", at);
    if (auto n = number(w)) {
      e.constant = *n;
      return true;
    }
    if (auto reg = drv::register_named(w)) {
      e.base = reg;
      return true;
    }
    if (w.size() > 3 && w.substr(0, 3) == "arg") {
      auto index = number(w.substr(3));
      if (!index || *index < 1 || *index > 16)
        return fail("argument numbers go from arg1 to arg16", at);
      auto loc = drv::arg_at_entry(cc_, unsigned(*index));
      if (loc.reg) {
        e.base = loc.reg;
      } else {
        e.base = &drv::registers::rsp;
        e.steps.push_back({address_expr::step::op::add, loc.stack_offset});
        e.steps.push_back({address_expr::step::op::load, 0});
      }
      return true;
    }
    return fail("unknown register \"" + std::string(w) + "\" (known: " + drv::register_names() +
                  ", arg1…arg16)",
                at);
  }

  static constexpr unsigned max_nesting = 16;

  std::string_view text_;
  drv::calling_convention cc_;
  size_t pos_ = 0;
  unsigned depth_ = 0;
  std::string error_;
  size_t error_at_ = 0;
};

std::string hex_bytes(std::span<const std::byte> bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (auto b : bytes) {
    out += digits[uint8_t(b) >> 4];
    out += digits[uint8_t(b) & 15];
  }
  return out;
}

/// UTF-16LE code units to UTF-8; a lone surrogate becomes U+FFFD.
std::string utf8_of(const std::vector<uint16_t>& units) {
  std::string out;
  for (size_t i = 0; i < units.size(); ++i) {
    uint32_t u = units[i];
    if (u >= 0xd800 && u < 0xdc00 && i + 1 < units.size() && units[i + 1] >= 0xdc00 &&
        units[i + 1] < 0xe000) {
      drv::append_utf8(out, 0x10000 + ((u - 0xd800) << 10) + (units[i + 1] - 0xdc00));
      ++i;
    } else if (u >= 0xd800 && u < 0xe000) {
      drv::append_utf8(out, 0xfffd);
    } else {
      drv::append_utf8(out, u);
    }
  }
  return out;
}

struct evaluation {
  uint64_t value = 0;
  drv::translation fault;
};

evaluation value_of(const address_expr& e, const drv::registers& regs, drv::page_walker& walker) {
  uint64_t v = e.base ? regs.*e.base : e.constant;
  for (auto& s : e.steps) {
    if (s.kind == address_expr::step::op::add) {
      v += s.value;
      continue;
    }
    std::byte word[8];
    if (auto t = walker.read(regs.cr3, v, word); !t)
      return {0, t};
    std::memcpy(&v, word, sizeof v);
  }
  return {v, {}};
}

/// Reads a NUL-terminated string of `unit`-byte characters, at most `max` of them, a page
/// at a time (the next page may be absent when the string ends before it).
capture_value read_string(uint64_t va, size_t unit, uint32_t max, const drv::registers& regs,
                          drv::page_walker& walker) {
  capture_value out;
  std::vector<std::byte> bytes;
  size_t limit = size_t(max) * unit;
  bool ended = false;
  while (bytes.size() < limit && !ended) {
    uint64_t at = va + bytes.size();
    size_t chunk = std::min<uint64_t>(limit - bytes.size(), drv::page_size - (at & drv::page_mask));
    auto start = bytes.size();
    bytes.resize(start + chunk);
    if (auto t = walker.read(regs.cr3, at, std::span(bytes).subspan(start)); !t)
      return {{}, t.fault, t.va, false, {}};
    // Look for the NUL among the whole characters read so far.
    for (size_t i = start - start % unit; i + unit <= bytes.size(); i += unit) {
      bool zero = std::all_of(bytes.begin() + i, bytes.begin() + i + unit,
                              [](std::byte b) { return b == std::byte{0}; });
      if (zero) {
        bytes.resize(i);
        ended = true;
        break;
      }
    }
  }
  out.truncated = !ended;
  if (unit == 1) {
    out.text.assign(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  } else {
    std::vector<uint16_t> units(bytes.size() / 2);
    for (size_t i = 0; i < units.size(); ++i)
      units[i] = uint16_t(uint8_t(bytes[2 * i]) | (uint8_t(bytes[2 * i + 1]) << 8));
    out.text = utf8_of(units);
  }
  return out;
}

}  // namespace

expr_parse_result parse_address_expr(std::string_view text, drv::calling_convention cc) {
  return expr_parser{text, cc}.parse();
}

std::string text_of(const capture_value& v) {
  return v.number ? hex_string(*v.number) : v.text;
}

std::string hex_string(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%" PRIx64, v);
  return buf;
}

const char* to_string(capture_spec::kind k) {
  switch (k) {
    case capture_spec::kind::value:
      return "value";
    case capture_spec::kind::bytes:
      return "bytes";
    case capture_spec::kind::ascii:
      return "ascii";
    case capture_spec::kind::utf16:
      return "utf16";
  }
  return "unknown";
}

std::vector<capture_value> evaluate(const std::vector<capture_spec>& specs,
                                    const drv::registers& regs, drv::page_walker& walker) {
  std::vector<capture_value> out;
  out.reserve(specs.size());
  for (auto& spec : specs) {
    auto at = value_of(spec.at, regs, walker);
    if (!at.fault) {
      out.push_back({{}, at.fault.fault, at.fault.va, false, {}});
      continue;
    }
    switch (spec.type) {
      case capture_spec::kind::value:
        out.push_back({{}, translation_fault::none, 0, false, at.value});
        break;
      case capture_spec::kind::bytes: {
        std::vector<std::byte> bytes(spec.length);
        if (auto t = walker.read(regs.cr3, at.value, bytes); !t)
          out.push_back({{}, t.fault, t.va, false, {}});
        else
          out.push_back({hex_bytes(bytes), translation_fault::none, 0, false, {}});
        break;
      }
      case capture_spec::kind::ascii:
        out.push_back(read_string(at.value, 1, spec.length, regs, walker));
        break;
      case capture_spec::kind::utf16:
        out.push_back(read_string(at.value, 2, spec.length, regs, walker));
        break;
    }
  }
  return out;
}

}  // namespace vmitap
