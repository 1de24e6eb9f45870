#include "drivers/guest/guest_abi.hpp"

#include <string_view>

namespace vmitap::drv {

namespace {

struct named_register {
  std::string_view name;
  uint64_t registers::*field;
};

constexpr named_register named_registers[] = {
  {"rax", &registers::rax},
  {"rbx", &registers::rbx},
  {"rcx", &registers::rcx},
  {"rdx", &registers::rdx},
  {"rsi", &registers::rsi},
  {"rdi", &registers::rdi},
  {"rsp", &registers::rsp},
  {"rbp", &registers::rbp},
  {"r8", &registers::r8},
  {"r9", &registers::r9},
  {"r10", &registers::r10},
  {"r11", &registers::r11},
  {"r12", &registers::r12},
  {"r13", &registers::r13},
  {"r14", &registers::r14},
  {"r15", &registers::r15},
  {"rip", &registers::rip},
  {"rflags", &registers::rflags},
  {"cr0", &registers::cr0},
  {"cr2", &registers::cr2},
  {"cr3", &registers::cr3},
  {"cr4", &registers::cr4},
  {"fs_base", &registers::fs_base},
  {"gs_base", &registers::gs_base},
  {"shadow_gs", &registers::shadow_gs},
  {"msr_lstar", &registers::msr_lstar},
};

}  // namespace

uint64_t registers::*register_named(std::string_view name) {
  for (auto& r : named_registers)
    if (r.name == name)
      return r.field;
  return nullptr;
}

const char* register_names() {
  return "rax rbx rcx rdx rsi rdi rsp rbp r8-r15 rip rflags cr0 cr2 cr3 cr4 fs_base gs_base "
         "shadow_gs msr_lstar";
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xc0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += char(0xe0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3f));
    out += char(0x80 | (cp & 0x3f));
  } else {
    out += char(0xf0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3f));
    out += char(0x80 | ((cp >> 6) & 0x3f));
    out += char(0x80 | (cp & 0x3f));
  }
}

const char* to_string(calling_convention cc) {
  return cc == calling_convention::sysv ? "sysv" : "ms-x64";
}

std::optional<calling_convention> calling_convention_from(std::string_view name) {
  if (name == "sysv")
    return calling_convention::sysv;
  if (name == "ms-x64")
    return calling_convention::ms_x64;
  return std::nullopt;
}

arg_location arg_at_entry(calling_convention cc, unsigned index) {
  static constexpr uint64_t registers::*sysv[] = {&registers::rdi, &registers::rsi, &registers::rdx,
                                                  &registers::rcx, &registers::r8,  &registers::r9};
  static constexpr uint64_t registers::*ms[] = {&registers::rcx, &registers::rdx, &registers::r8,
                                                &registers::r9};
  auto in_registers = register_args(cc);
  if (index >= 1 && index <= in_registers)
    return {cc == calling_convention::sysv ? sysv[index - 1] : ms[index - 1], 0};
  // [rsp] is the return address. Microsoft x64 then has the caller's 32-byte shadow space
  // for the four register arguments, so argument 5 is at rsp+0x28; System V's 7th at rsp+8.
  uint64_t first_on_stack = cc == calling_convention::sysv ? 8 : 0x28;
  return {nullptr, first_on_stack + 8 * uint64_t(index - in_registers - 1)};
}

}  // namespace vmitap::drv
