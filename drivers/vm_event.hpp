#pragma once

// What a hypervisor and vmitap say to each other about one paused VCPU: requests, responses,
// registers, page access. The types mirror Xen's vm_event interface (xen/vm_event.h, interface
// version 7) field by field, so the Xen backend translates without loss and a response can
// carry back the complete register block Xen's SET_REGISTERS writes.

#include <cstdint>

namespace vmitap::drv {

using domain_id = uint32_t;
using vcpu_id = uint32_t;
using view_id = uint16_t;
using gfn_t = uint64_t;

inline constexpr unsigned page_shift = 12;
inline constexpr uint64_t page_size = uint64_t{1} << page_shift;
inline constexpr uint64_t page_mask = page_size - 1;

constexpr gfn_t gfn_of(uint64_t pa) {
  return pa >> page_shift;
}
constexpr uint64_t pa_of(gfn_t gfn, uint64_t offset = 0) {
  return (gfn << page_shift) | offset;
}

/// Xen's MAX_ALTP2M: view 0 (the host p2m) plus 9 views that can be created.
inline constexpr view_id max_views = 10;

/// EPT access rights of one page in one view; the values are Xen's xenmem_access_t.
enum class page_access : uint8_t { none = 0, r = 1, w = 2, rw = 3, x = 4, rx = 5, wx = 6, rwx = 7 };

constexpr page_access operator|(page_access a, page_access b) {
  return page_access(uint8_t(a) | uint8_t(b));
}
constexpr page_access operator&(page_access a, page_access b) {
  return page_access(uint8_t(a) & uint8_t(b));
}
constexpr page_access without(page_access a, page_access b) {
  return page_access(uint8_t(a) & ~uint8_t(b) & 7);
}
constexpr bool allows(page_access a, page_access b) {
  return (a & b) == b;
}
const char* to_string(page_access a);

/// Why the hypervisor paused a VCPU; the numbers are Xen's VM_EVENT_REASON_*.
enum class event_reason : uint32_t {
  unknown = 0,
  mem_access = 1,
  software_breakpoint = 6,
  singlestep = 7,
};
const char* to_string(event_reason r);
/// True for the reasons vmitap handles; anything else is answered as malformed.
constexpr bool known(event_reason r) {
  return r == event_reason::mem_access || r == event_reason::singlestep;
}

inline constexpr uint32_t interface_version = 7;

/// Flags of requests and responses; the bits are Xen's VM_EVENT_FLAG_*.
namespace flag {
inline constexpr uint32_t vcpu_paused = 1u << 0;
inline constexpr uint32_t emulate = 1u << 2;
inline constexpr uint32_t toggle_singlestep = 1u << 4;
inline constexpr uint32_t alternate_p2m = 1u << 7;
inline constexpr uint32_t set_registers = 1u << 8;
inline constexpr uint32_t fast_singlestep = 1u << 11;
}  // namespace flag

/// A segment register as Xen reports it (vm_event_x86_selector_reg plus the selector).
struct segment {
  uint32_t limit = 0;  ///< 20 bits, shifted right by 12 when the granularity bit is set
  uint16_t ar = 0;     ///< access rights, 12 bits
  uint16_t sel = 0;
  bool operator==(const segment&) const = default;
};

/// The full x86 register block of vm_event_regs_x86. Xen's SET_REGISTERS writes rax-r15,
/// rflags and rip from it, so a response must carry every one of them, changed or not.
struct registers {
  uint64_t rax = 0, rcx = 0, rdx = 0, rbx = 0, rsp = 0, rbp = 0, rsi = 0, rdi = 0;
  uint64_t r8 = 0, r9 = 0, r10 = 0, r11 = 0, r12 = 0, r13 = 0, r14 = 0, r15 = 0;
  uint64_t rflags = 0, dr6 = 0, dr7 = 0, rip = 0;
  uint64_t cr0 = 0, cr2 = 0, cr3 = 0, cr4 = 0;
  uint64_t sysenter_cs = 0, sysenter_esp = 0, sysenter_eip = 0;
  uint64_t msr_efer = 0, msr_star = 0, msr_lstar = 0;
  uint64_t gdtr_base = 0, npt_base = 0, vmtrace_pos = 0;
  uint32_t cs_base = 0, ss_base = 0, ds_base = 0, es_base = 0;
  uint64_t fs_base = 0, gs_base = 0, shadow_gs = 0;
  segment cs, ss, ds, es, fs, gs;
  uint16_t gdtr_limit = 0;
  bool operator==(const registers&) const = default;
};

/// The `u.mem_access` part of a request: which access faulted, where.
struct mem_access_info {
  gfn_t gfn = 0;
  uint64_t offset = 0;  ///< offset of the faulting address within the page
  uint64_t gla = 0;     ///< guest linear address of the access (if gla_valid)
  page_access attempted = page_access::none;
  bool gla_valid = false;
  /// The access was the hardware's own, walking the guest's page tables (setting an
  /// accessed or dirty bit), on the way to translating `gla`.
  bool in_page_walk = false;
  bool operator==(const mem_access_info&) const = default;
};

/// One request from the hypervisor. The VCPU stays paused until it is answered.
struct event {
  uint32_t version = interface_version;
  uint32_t flags = flag::vcpu_paused;
  event_reason reason = event_reason::unknown;
  vcpu_id vcpu = 0;
  view_id view = 0;     ///< altp2m view the VCPU was in
  mem_access_info mem;  ///< for mem_access; for singlestep, gfn of the next instruction
  registers regs;
};

/// The answer to one event. Build it with `make_response` so the echoed fields are right.
struct response {
  uint32_t version = interface_version;
  uint32_t flags = 0;
  event_reason reason = event_reason::unknown;
  vcpu_id vcpu = 0;
  view_id view = 0;              ///< with flag::alternate_p2m: switch this VCPU to it
  view_id fast_return_view = 0;  ///< with flag::fast_singlestep: back to it after one instruction
  mem_access_info mem;           ///< echoed (Xen's EMULATE needs it)
  registers regs;                ///< written in full with flag::set_registers
};

/// A response that resumes the VCPU unchanged: version, VCPU, pause flag, echoes and the
/// request's registers (so SET_REGISTERS changes only what the caller changes).
response make_response(const event& ev);

struct access_change {
  gfn_t gfn = 0;
  page_access value = page_access::rwx;
};

}  // namespace vmitap::drv
