// Calling conventions: what a caller leaves for its callee. At a function's first instruction
// its arguments are where drv::arg_at_entry says (registers, then the stack above the return
// address), its strings are in guest memory behind the page tables, and [rsp] is the return
// address. Runs on the VCPU's guest thread, which alone writes that VCPU's pages.

#include "drivers/sim/domain.hpp"

#include <cstring>
#include <utility>

namespace vmitap::sim {

namespace {

constexpr uint64_t no_pa = ~uint64_t{0};

// Printable characters beyond ASCII for UTF-16 strings: Latin-1 letters, Greek, Cyrillic, CJK.
constexpr std::pair<char16_t, char16_t> wide_ranges[] = {
  {0x00c0, 0x00ff}, {0x03b1, 0x03c9}, {0x0410, 0x044f}, {0x4e00, 0x4fff}};

guest_string draw_string(rng& r, bool wide) {
  guest_string s;
  auto length = 1 + unsigned(r.below(max_string_chars));
  size_t at = 0;
  for (unsigned k = 0; k < length; ++k) {
    auto u = r.next();
    char16_t c = char16_t(0x20 + u % 95);
    if (wide && r.chance(0.125)) {
      auto [lo, hi] = wide_ranges[(u >> 8) & 3];
      c = char16_t(lo + (u >> 16) % (hi - lo + 1));
    }
    s.bytes[at++] = std::byte(c & 0xff);
    if (wide)
      s.bytes[at++] = std::byte(c >> 8);
    drv::append_utf8(s.text, c);
  }
  at += wide ? 2 : 1;  // the NUL: the bytes are zeroed
  s.size = uint8_t(at);
  return s;
}

}  // namespace

string_pool make_string_pool(uint64_t seed) {
  rng r{seed ^ 0x57'1265'9a11'0c0dULL};
  string_pool pool;
  for (size_t i = 0; i < string_pool::size; ++i) {
    pool.ascii.push_back(draw_string(r, false));
    pool.utf16.push_back(draw_string(r, true));
  }
  return pool;
}

uint64_t domain::own_pa(const vcpu& v, uint64_t va) const {
  const auto& home = *v.home;
  if (va - home.stack_low < home.stack_top - home.stack_low)
    return drv::pa_of(home.stack_gfns[(va - home.stack_low) >> drv::page_shift],
                      va & drv::page_mask);
  if (va - home.strings_va < string_pages * drv::page_size)
    return drv::pa_of(home.string_gfns[(va - home.strings_va) >> drv::page_shift],
                      va & drv::page_mask);
  auto kernel_pa = layout_.kernel.pa_of(va);
  if (kernel_pa < layout_.linear_bytes && drv::gfn_of(kernel_pa) == home.kernel_strings_gfn)
    return kernel_pa;
  return no_pa;
}

void domain::write_own(vcpu& v, uint64_t va, std::span<const std::byte> bytes) {
  while (!bytes.empty()) {
    auto n = std::min<size_t>(bytes.size(), drv::page_size - (va & drv::page_mask));
    // Anywhere else (a monitor moved rsp) the guest would fault; the sim drops the write.
    if (auto pa = own_pa(v, va); pa != no_pa)
      memory_.write(pa, bytes.first(n));
    bytes = bytes.subspan(n);
    va += n;
  }
}

void domain::write_own64(vcpu& v, uint64_t va, uint64_t value) {
  if ((va & 7) != 0) {
    std::array<std::byte, 8> bytes;
    std::memcpy(bytes.data(), &value, 8);
    write_own(v, va, bytes);
  } else if (auto pa = own_pa(v, va); pa != no_pa) {
    memory_.write64(pa, value);
  }
}

uint64_t domain::argument(vcpu& v, arg_kind kind, call_record* rec, unsigned index) {
  auto x = v.arg_random.next();
  if (rec) {
    rec->kinds[index] = kind;
    rec->mapped[index] = true;
  }
  if (kind == arg_kind::integer)
    return (x & 3) != 0 ? (x >> 2) % 4096 : x;  // mostly small, some full width
  if ((x & 15) == 0) {  // 1 in 16 strings is in a page the guest has not mapped
    if (rec)
      rec->mapped[index] = false;
    return layout_.processes[v.home->process].unmapped_va + ((x >> 8) & drv::page_mask & ~7u);
  }
  const auto& str =
    (kind == arg_kind::utf16 ? strings_.utf16 : strings_.ascii)[(x >> 4) % string_pool::size];
  if (rec)
    rec->text[index] = str.text;
  auto size = size_t{str.size};
  auto bytes = std::span<const std::byte>(str.bytes.data(), size);
  // Each VCPU writes its strings round its own rings: one call's strings never overlap, and
  // nothing overwrites them until this VCPU sets up a later call.
  if (((x >> 12) & 3) == 0) {  // a quarter of the others in kernel memory (the linear map)
    if (v.kernel_cursor + size > drv::page_size)
      v.kernel_cursor = 0;
    auto pa = drv::pa_of(v.home->kernel_strings_gfn, v.kernel_cursor);
    memory_.write(pa, bytes);
    v.kernel_cursor = uint32_t((v.kernel_cursor + size + 7) & ~size_t{7});
    return layout_.kernel.va_of(pa);
  }
  if (v.string_cursor + size > string_pages * drv::page_size)
    v.string_cursor = 0;
  auto va = v.home->strings_va + v.string_cursor;
  write_own(v, va, bytes);
  v.string_cursor = uint32_t((v.string_cursor + size + 7) & ~size_t{7});
  return va;
}

uint32_t domain::enter(vcpu& v, uint32_t function, uint64_t return_va) {
  const auto& sig = layout_.signatures[function];
  call_record* rec = nullptr;
  if (cfg_.record_calls) {
    rec = &v.calls.emplace_back();
    rec->entry_pa = program_.functions()[function].entry_pa;
    rec->arity = sig.arity;
    rec->process = v.process;
  }
  std::array<uint64_t, max_args> args;
  for (unsigned i = 0; i < sig.arity; ++i)
    args[i] = argument(v, sig.kinds[i], rec, i);
  // The caller reserves the argument area 16-aligned, then `call` pushes the return address.
  auto caller_rsp = v.regs.rsp;
  auto rsp = ((caller_rsp - caller_area(sig, cfg_.abi)) & ~uint64_t{15}) - 8;
  write_own64(v, rsp, return_va);
  for (unsigned i = 0; i < sig.arity; ++i) {
    const auto& at = arg_at_entry_[i];
    if (at.reg)
      v.regs.*at.reg = args[i];
    else
      write_own64(v, rsp + at.stack_offset, args[i]);
    if (rec)
      rec->args[i] = args[i];
  }
  v.regs.rsp = rsp;
  return uint32_t(caller_rsp - rsp);
}

}  // namespace vmitap::sim
