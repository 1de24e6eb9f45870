// libFuzzer: an address expression and a guest memory, both arbitrary. The parser either
// compiles the expression or names an offset inside it; evaluation walks whatever page
// tables the bytes make (loops, huge frames, wild pointers) and ends with a value or a fault,
// never a crash; strings never exceed their bound and decode to valid UTF-8.

#include "actors/model/captures.hpp"
#include "tests/fuzz/fuzz_checks.hpp"
#include "tests/support/memory_session.hpp"

#include <cstdlib>
#include <cstring>

using namespace vmitap;
using namespace vmitap::fuzz;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Layout: cc, kind, length, then the expression up to a NUL, then registers, then memory.
  if (size < 4)
    return 0;
  auto cc = data[0] & 1 ? drv::calling_convention::ms_x64 : drv::calling_convention::sysv;
  auto kind = capture_spec::kind(data[1] % 4);
  uint32_t length = 1 + data[2] % 64;
  const char* text = reinterpret_cast<const char*>(data + 3);
  size_t text_size = strnlen(text, size - 3);
  std::string_view expr(text, text_size);
  auto parsed = parse_address_expr(expr, cc);
  require(parsed.expr || parsed.offset <= expr.size());
  if (!parsed.expr)
    return 0;
  size_t at = 3 + text_size + 1;
  drv::registers regs;
  // The general-purpose registers from the input; cr3 0, so the tables are the fuzzed pages.
  for (auto name : {"rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10",
                    "r11", "r12", "r13", "r14", "r15"}) {
    if (at + 8 > size)
      break;
    std::memcpy(&(regs.*drv::register_named(name)), data + at, 8);
    at += 8;
  }
  testing::memory_session mem{16 * drv::page_size};
  if (at < size)
    mem.write(0, data + at, std::min<size_t>(size - at, 16 * drv::page_size));
  drv::page_walker walker{mem};
  std::vector<capture_spec> specs{{"c", kind, *parsed.expr, length, std::string(expr)}};
  auto values = evaluate(specs, regs, walker);
  require(values.size() == 1);
  auto& v = values[0];
  if (v.fault == drv::translation_fault::none && kind == capture_spec::kind::utf16)
    require(valid_utf8(v.text) && v.text.size() <= size_t(length) * 3);
  if (v.fault == drv::translation_fault::none && kind == capture_spec::kind::ascii)
    require(v.text.size() <= length);
  if (v.fault == drv::translation_fault::none && kind == capture_spec::kind::bytes)
    require(v.text.size() == size_t(length) * 2);
  if (v.fault == drv::translation_fault::none)
    require(v.number.has_value() == (kind == capture_spec::kind::value));
  require(walker.reads() <= 4096);
  return 0;
}
