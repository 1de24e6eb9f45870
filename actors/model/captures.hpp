#pragma once

// Captures: what a breakpoint reads from the guest while the trapped VCPU is still paused,
// before it is answered. A capture is a value (a register, an argument, a word in memory), a
// run of bytes, or a string (ASCII or UTF-16), at an address expression such as `rdi`,
// `arg5` or `[rsp+0x28]+8`. The expression is compiled once, from the config, with the guest's
// calling convention; evaluating it is a page walk or two over the port's physical reads.

#include "drivers/guest/guest_abi.hpp"
#include "drivers/guest/page_walker.hpp"

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace vmitap {

/// A register (or a constant), then offsets and 8-byte loads, in order: `[rsp+0x28]+8` is
/// rsp, add 0x28, load, add 8.
struct address_expr {
  struct step {
    enum class op : uint8_t { add, load } kind = op::add;
    uint64_t value = 0;  ///< add: two's complement for a minus
    bool operator==(const step&) const = default;
  };
  uint64_t drv::registers::*base = nullptr;  ///< null: `constant`
  uint64_t constant = 0;
  std::vector<step> steps;
  bool operator==(const address_expr&) const = default;
};

struct expr_parse_result {
  std::optional<address_expr> expr;
  std::string error;  ///< when there is no expr
  size_t offset = 0;  ///< of the error, in the text
};

/// Parses `text`: `expr := term (('+'|'-') number)*`, `term := register | argN | number |
/// '[' expr ']'`, where argN is argument N (1-based) at a function's entry under `cc`.
expr_parse_result parse_address_expr(std::string_view text, drv::calling_convention cc);

struct capture_spec {
  enum class kind : uint8_t {
    value,  ///< the expression's value
    bytes,  ///< `length` bytes at the expression
    ascii,  ///< a NUL-terminated string of 8-bit characters, at most `length` of them
    utf16,  ///< a NUL-terminated UTF-16LE string, at most `length` code units
  };
  std::string name;
  kind type = kind::value;
  address_expr at;
  uint32_t length = 0;
  std::string source;  ///< the expression as written (for `check`)
  bool operator==(const capture_spec&) const = default;
};
const char* to_string(capture_spec::kind k);

/// Longest run of bytes or characters a capture may read: a record stays a log line.
inline constexpr uint32_t max_capture_length = 4096;

/// The most guest memory `c` reads at one hit, in bytes.
constexpr size_t capture_bytes(const capture_spec& c) {
  switch (c.type) {
    case capture_spec::kind::value:
      return 8;
    case capture_spec::kind::bytes:
    case capture_spec::kind::ascii:
      return c.length;
    case capture_spec::kind::utf16:
      return size_t(c.length) * 2;
  }
  return 0;
}

/// A breakpoint's captures, shared by every copy of it; compared by content (a reload that
/// changes a capture changes the breakpoint).
struct capture_list {
  std::shared_ptr<const std::vector<capture_spec>> specs;
  bool empty() const { return !specs || specs->empty(); }
  bool operator==(const capture_list& o) const {
    return empty() ? o.empty() : !o.empty() && *specs == *o.specs;
  }
};

/// What one capture read at a hit.
struct capture_value {
  std::string text;  ///< bytes: two hex digits each; strings: UTF-8; value: none (`number`)
  drv::translation_fault fault = drv::translation_fault::none;
  uint64_t address = 0;    ///< on a fault: the guest virtual address that could not be read
  bool truncated = false;  ///< a string without its NUL within `length`
  /// A value capture's number: kept as read on the hot path, formatted where it is written.
  std::optional<uint64_t> number;
  bool operator==(const capture_value&) const = default;
};

/// What a record writes for `v` (read without a fault): a number in hex_string's form, the
/// text otherwise.
std::string text_of(const capture_value& v);

/// A number as hit records write it: "0x" and lowercase hex digits (JSON numbers lose
/// 64-bit precision in most log pipelines).
std::string hex_string(uint64_t v);

/// Evaluates every capture in `specs` (in order) with `regs`, reading memory under `regs.cr3`.
std::vector<capture_value> evaluate(const std::vector<capture_spec>& specs,
                                    const drv::registers& regs, drv::page_walker& walker);

}  // namespace vmitap
