#pragma once

// What a guest's code agrees on, as far as vmitap reads it: x86-64 four-level paging (the
// entries' bits) and where the calling conventions put a function's arguments at its entry.
// The simulated hypervisor builds its guests by these rules; captures read guests by them.

#include "drivers/vm_event.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace vmitap::drv {

// --- paging (Intel SDM vol. 3A §4.5, 4-level) ------------------------------------------------
namespace pte {
inline constexpr uint64_t present = 1ULL << 0;
inline constexpr uint64_t writable = 1ULL << 1;
inline constexpr uint64_t user = 1ULL << 2;
/// A: the processor sets it in each entry a walk uses (a write to the table page).
inline constexpr uint64_t accessed = 1ULL << 5;
inline constexpr uint64_t large = 1ULL << 7;  ///< PS: a 1 GiB (PDPTE) or 2 MiB (PDE) page
inline constexpr uint64_t no_execute = 1ULL << 63;
/// Bits 51:12: the physical address of the next table or of a 4 KiB page.
inline constexpr uint64_t address_mask = 0x000f'ffff'ffff'f000ULL;
}  // namespace pte

/// cr3 bits 51:12 hold the PML4's physical address (the low bits are PCID or flags).
constexpr uint64_t pml4_of(uint64_t cr3) {
  return cr3 & pte::address_mask;
}
/// The table index (9 bits) of `va` at `level` (4: PML4 … 1: page table).
constexpr unsigned table_index(uint64_t va, unsigned level) {
  return unsigned((va >> (12 + 9 * (level - 1))) & 0x1ff);
}
/// Bits 63:47 all equal: the only addresses 4-level paging translates.
constexpr bool canonical(uint64_t va) {
  auto top = va >> 47;
  return top == 0 || top == 0x1ffff;
}

// --- registers by name -----------------------------------------------------------------------
/// The 64-bit register `name` names in a vm_event register block ("rax", "r8", "rip",
/// "rflags", "cr3", "fs_base", …); null if none.
uint64_t registers::*register_named(std::string_view name);
/// Every name `register_named` knows, for error messages.
const char* register_names();

// --- strings -----------------------------------------------------------------------------------
/// Appends code point `cp` (up to U+10FFFF) as UTF-8: guests pass UTF-16, records carry UTF-8.
void append_utf8(std::string& out, uint32_t cp);

// --- calling conventions ---------------------------------------------------------------------
enum class calling_convention : uint8_t {
  sysv,    ///< System V AMD64 (Linux, BSD): rdi, rsi, rdx, rcx, r8, r9, then the stack
  ms_x64,  ///< Microsoft x64 (Windows): rcx, rdx, r8, r9, then the stack above 32 bytes of shadow
};
const char* to_string(calling_convention cc);
std::optional<calling_convention> calling_convention_from(std::string_view name);

/// Where integer argument `index` (1-based) is at a function's first instruction, after the
/// call pushed the return address: a register, or the stack at rsp + `stack_offset`.
struct arg_location {
  uint64_t registers::*reg = nullptr;  ///< null: on the stack
  uint64_t stack_offset = 0;
};
arg_location arg_at_entry(calling_convention cc, unsigned index);
/// Arguments passed in registers.
constexpr unsigned register_args(calling_convention cc) {
  return cc == calling_convention::sysv ? 6 : 4;
}

}  // namespace vmitap::drv
