#include "drivers/xen/codec.hpp"

#include <cstring>

namespace vmitap::xen {

namespace {

// The flags vmitap uses are Xen's bits, checked at compile time.
static_assert(drv::flag::vcpu_paused == VM_EVENT_FLAG_VCPU_PAUSED);
static_assert(drv::flag::emulate == VM_EVENT_FLAG_EMULATE);
static_assert(drv::flag::toggle_singlestep == VM_EVENT_FLAG_TOGGLE_SINGLESTEP);
static_assert(drv::flag::alternate_p2m == VM_EVENT_FLAG_ALTERNATE_P2M);
static_assert(drv::flag::set_registers == VM_EVENT_FLAG_SET_REGISTERS);
static_assert(drv::flag::fast_singlestep == VM_EVENT_FLAG_FAST_SINGLESTEP);
static_assert(drv::interface_version == VM_EVENT_INTERFACE_VERSION);
static_assert(uint32_t(drv::event_reason::mem_access) == VM_EVENT_REASON_MEM_ACCESS);
static_assert(uint32_t(drv::event_reason::singlestep) == VM_EVENT_REASON_SINGLESTEP);
static_assert(uint8_t(drv::page_access::rwx) == XENMEM_access_rwx);
static_assert(uint8_t(drv::page_access::rw) == XENMEM_access_rw);

drv::segment segment_of(const vm_event_x86_selector_reg& r, uint16_t sel) {
  return {r.limit, uint16_t(r.ar), sel};
}

void set_segment(vm_event_x86_selector_reg& r, uint16_t& sel, const drv::segment& s) {
  r.limit = s.limit & 0xfffff;
  r.ar = s.ar & 0xfff;
  sel = s.sel;
}

drv::registers registers_of(const vm_event_regs_x86& x) {
  drv::registers r;
  r.rax = x.rax;
  r.rcx = x.rcx;
  r.rdx = x.rdx;
  r.rbx = x.rbx;
  r.rsp = x.rsp;
  r.rbp = x.rbp;
  r.rsi = x.rsi;
  r.rdi = x.rdi;
  r.r8 = x.r8;
  r.r9 = x.r9;
  r.r10 = x.r10;
  r.r11 = x.r11;
  r.r12 = x.r12;
  r.r13 = x.r13;
  r.r14 = x.r14;
  r.r15 = x.r15;
  r.rflags = x.rflags;
  r.dr6 = x.dr6;
  r.dr7 = x.dr7;
  r.rip = x.rip;
  r.cr0 = x.cr0;
  r.cr2 = x.cr2;
  r.cr3 = x.cr3;
  r.cr4 = x.cr4;
  r.sysenter_cs = x.sysenter_cs;
  r.sysenter_esp = x.sysenter_esp;
  r.sysenter_eip = x.sysenter_eip;
  r.msr_efer = x.msr_efer;
  r.msr_star = x.msr_star;
  r.msr_lstar = x.msr_lstar;
  r.gdtr_base = x.gdtr_base;
  r.npt_base = x.npt_base;
  r.vmtrace_pos = x.vmtrace_pos;
  r.cs_base = x.cs_base;
  r.ss_base = x.ss_base;
  r.ds_base = x.ds_base;
  r.es_base = x.es_base;
  r.fs_base = x.fs_base;
  r.gs_base = x.gs_base;
  r.shadow_gs = x.shadow_gs;
  r.cs = segment_of(x.cs, x.cs_sel);
  r.ss = segment_of(x.ss, x.ss_sel);
  r.ds = segment_of(x.ds, x.ds_sel);
  r.es = segment_of(x.es, x.es_sel);
  r.fs = segment_of(x.fs, x.fs_sel);
  r.gs = segment_of(x.gs, x.gs_sel);
  r.gdtr_limit = x.gdtr_limit;
  return r;
}

void set_registers(vm_event_regs_x86& x, const drv::registers& r) {
  x.rax = r.rax;
  x.rcx = r.rcx;
  x.rdx = r.rdx;
  x.rbx = r.rbx;
  x.rsp = r.rsp;
  x.rbp = r.rbp;
  x.rsi = r.rsi;
  x.rdi = r.rdi;
  x.r8 = r.r8;
  x.r9 = r.r9;
  x.r10 = r.r10;
  x.r11 = r.r11;
  x.r12 = r.r12;
  x.r13 = r.r13;
  x.r14 = r.r14;
  x.r15 = r.r15;
  x.rflags = r.rflags;
  x.dr6 = r.dr6;
  x.dr7 = r.dr7;
  x.rip = r.rip;
  x.cr0 = r.cr0;
  x.cr2 = r.cr2;
  x.cr3 = r.cr3;
  x.cr4 = r.cr4;
  x.sysenter_cs = r.sysenter_cs;
  x.sysenter_esp = r.sysenter_esp;
  x.sysenter_eip = r.sysenter_eip;
  x.msr_efer = r.msr_efer;
  x.msr_star = r.msr_star;
  x.msr_lstar = r.msr_lstar;
  x.gdtr_base = r.gdtr_base;
  x.npt_base = r.npt_base;
  x.vmtrace_pos = r.vmtrace_pos;
  x.cs_base = r.cs_base;
  x.ss_base = r.ss_base;
  x.ds_base = r.ds_base;
  x.es_base = r.es_base;
  x.fs_base = r.fs_base;
  x.gs_base = r.gs_base;
  x.shadow_gs = r.shadow_gs;
  set_segment(x.cs, x.cs_sel, r.cs);
  set_segment(x.ss, x.ss_sel, r.ss);
  set_segment(x.ds, x.ds_sel, r.ds);
  set_segment(x.es, x.es_sel, r.es);
  set_segment(x.fs, x.fs_sel, r.fs);
  set_segment(x.gs, x.gs_sel, r.gs);
  x.gdtr_limit = r.gdtr_limit;
}

drv::mem_access_info mem_of(const vm_event_mem_access& m) {
  return {m.gfn,
          m.offset,
          m.gla,
          drv::page_access(m.flags & MEM_ACCESS_RWX),
          (m.flags & MEM_ACCESS_GLA_VALID) != 0,
          (m.flags & MEM_ACCESS_FAULT_IN_GPT) != 0};
}

void set_mem(vm_event_mem_access& out, const drv::mem_access_info& m) {
  out.gfn = m.gfn;
  out.offset = m.offset;
  out.gla = m.gla;
  out.flags = uint32_t(m.attempted) | (m.gla_valid ? MEM_ACCESS_GLA_VALID : 0) |
              (m.in_page_walk ? MEM_ACCESS_FAULT_IN_GPT : 0);
}

}  // namespace

drv::event from_request(const vm_event_request_t& req) {
  drv::event ev;
  ev.version = req.version;
  ev.flags = req.flags;
  ev.reason = drv::event_reason(req.reason);
  ev.vcpu = req.vcpu_id;
  ev.view = (req.flags & VM_EVENT_FLAG_ALTERNATE_P2M) ? req.altp2m_idx : 0;
  if (req.reason == VM_EVENT_REASON_MEM_ACCESS) {
    auto& m = req.u.mem_access;
    ev.mem = mem_of(m);
  } else if (req.reason == VM_EVENT_REASON_SINGLESTEP) {
    ev.mem.gfn = req.u.singlestep.gfn;
  }
  ev.regs = registers_of(req.data.regs.x86);
  return ev;
}

void to_response(const drv::response& rsp, vm_event_response_t& out) {
  std::memset(&out, 0, sizeof out);
  out.version = rsp.version;
  out.vcpu_id = rsp.vcpu;
  out.reason = uint32_t(rsp.reason);
  out.flags = rsp.flags;
  if (rsp.flags & VM_EVENT_FLAG_ALTERNATE_P2M)
    out.altp2m_idx = rsp.view;
  // The echo EMULATE needs; for a singlestep request the gfn Xen sent.
  set_mem(out.u.mem_access, rsp.mem);
  if ((rsp.flags & VM_EVENT_FLAG_FAST_SINGLESTEP) &&
      !(rsp.flags & VM_EVENT_FLAG_TOGGLE_SINGLESTEP)) {
    out.flags &= ~uint32_t(VM_EVENT_FLAG_EMULATE);  // never both: p2midx overlays the echo
    out.u.fast_singlestep.p2midx = rsp.fast_return_view;
  }
  set_registers(out.data.regs.x86, rsp.regs);  // SET_REGISTERS writes the whole block
}

void to_request(const drv::event& ev, vm_event_request_t& out) {
  std::memset(&out, 0, sizeof out);
  out.version = ev.version;
  out.flags = ev.flags | VM_EVENT_FLAG_ALTERNATE_P2M;
  out.reason = uint32_t(ev.reason);
  out.vcpu_id = ev.vcpu;
  out.altp2m_idx = ev.view;
  if (ev.reason == drv::event_reason::singlestep) {
    out.u.singlestep.gfn = ev.mem.gfn;
  } else {
    set_mem(out.u.mem_access, ev.mem);
  }
  set_registers(out.data.regs.x86, ev.regs);
}

drv::response from_response(const vm_event_response_t& rsp) {
  drv::response out;
  out.version = rsp.version;
  out.flags = rsp.flags;
  out.reason = drv::event_reason(rsp.reason);
  out.vcpu = rsp.vcpu_id;
  out.view = rsp.altp2m_idx;
  if (rsp.flags & VM_EVENT_FLAG_FAST_SINGLESTEP)
    out.fast_return_view = rsp.u.fast_singlestep.p2midx;
  auto& m = rsp.u.mem_access;
  out.mem = mem_of(m);
  out.regs = registers_of(rsp.data.regs.x86);
  return out;
}

// The save record and the vm_event block name the same registers alike; segments differ
// (a save record holds the full 32-bit limit and a base per segment).
namespace {

template <class Copy>
void each_hvm_register(Copy&& copy) {
  copy(&drv::registers::rax, &hvm_hw_cpu::rax);
  copy(&drv::registers::rcx, &hvm_hw_cpu::rcx);
  copy(&drv::registers::rdx, &hvm_hw_cpu::rdx);
  copy(&drv::registers::rbx, &hvm_hw_cpu::rbx);
  copy(&drv::registers::rsp, &hvm_hw_cpu::rsp);
  copy(&drv::registers::rbp, &hvm_hw_cpu::rbp);
  copy(&drv::registers::rsi, &hvm_hw_cpu::rsi);
  copy(&drv::registers::rdi, &hvm_hw_cpu::rdi);
  copy(&drv::registers::r8, &hvm_hw_cpu::r8);
  copy(&drv::registers::r9, &hvm_hw_cpu::r9);
  copy(&drv::registers::r10, &hvm_hw_cpu::r10);
  copy(&drv::registers::r11, &hvm_hw_cpu::r11);
  copy(&drv::registers::r12, &hvm_hw_cpu::r12);
  copy(&drv::registers::r13, &hvm_hw_cpu::r13);
  copy(&drv::registers::r14, &hvm_hw_cpu::r14);
  copy(&drv::registers::r15, &hvm_hw_cpu::r15);
  copy(&drv::registers::rip, &hvm_hw_cpu::rip);
  copy(&drv::registers::rflags, &hvm_hw_cpu::rflags);
  copy(&drv::registers::cr0, &hvm_hw_cpu::cr0);
  copy(&drv::registers::cr2, &hvm_hw_cpu::cr2);
  copy(&drv::registers::cr3, &hvm_hw_cpu::cr3);
  copy(&drv::registers::cr4, &hvm_hw_cpu::cr4);
  copy(&drv::registers::dr6, &hvm_hw_cpu::dr6);
  copy(&drv::registers::dr7, &hvm_hw_cpu::dr7);
  copy(&drv::registers::sysenter_cs, &hvm_hw_cpu::sysenter_cs);
  copy(&drv::registers::sysenter_esp, &hvm_hw_cpu::sysenter_esp);
  copy(&drv::registers::sysenter_eip, &hvm_hw_cpu::sysenter_eip);
  copy(&drv::registers::msr_efer, &hvm_hw_cpu::msr_efer);
  copy(&drv::registers::msr_star, &hvm_hw_cpu::msr_star);
  copy(&drv::registers::msr_lstar, &hvm_hw_cpu::msr_lstar);
  copy(&drv::registers::fs_base, &hvm_hw_cpu::fs_base);
  copy(&drv::registers::gs_base, &hvm_hw_cpu::gs_base);
  copy(&drv::registers::shadow_gs, &hvm_hw_cpu::shadow_gs);
  copy(&drv::registers::gdtr_base, &hvm_hw_cpu::gdtr_base);
}

/// The attribute format both use is Xen's packed 12 bits; G (bit 11) scales the limit.
drv::segment segment_of(uint32_t sel, uint32_t limit, uint32_t ar) {
  constexpr uint32_t granularity = 1u << 11;
  return {ar & granularity ? limit >> 12 : limit, uint16_t(ar & 0xfff), uint16_t(sel)};
}

void set_segment(uint32_t& sel, uint32_t& limit, uint32_t& ar, const drv::segment& s) {
  constexpr uint32_t granularity = 1u << 11;
  sel = s.sel;
  ar = s.ar;
  limit = s.ar & granularity ? (s.limit << 12) | 0xfff : s.limit;
}

}  // namespace

drv::registers from_hvm_cpu(const hvm_hw_cpu& cpu) {
  drv::registers r;
  each_hvm_register([&](auto ours, auto theirs) { r.*ours = cpu.*theirs; });
  r.cs = segment_of(cpu.cs_sel, cpu.cs_limit, cpu.cs_arbytes);
  r.ss = segment_of(cpu.ss_sel, cpu.ss_limit, cpu.ss_arbytes);
  r.ds = segment_of(cpu.ds_sel, cpu.ds_limit, cpu.ds_arbytes);
  r.es = segment_of(cpu.es_sel, cpu.es_limit, cpu.es_arbytes);
  r.fs = segment_of(cpu.fs_sel, cpu.fs_limit, cpu.fs_arbytes);
  r.gs = segment_of(cpu.gs_sel, cpu.gs_limit, cpu.gs_arbytes);
  r.cs_base = uint32_t(cpu.cs_base);
  r.ss_base = uint32_t(cpu.ss_base);
  r.ds_base = uint32_t(cpu.ds_base);
  r.es_base = uint32_t(cpu.es_base);
  r.gdtr_limit = uint16_t(cpu.gdtr_limit);
  return r;
}

void to_hvm_cpu(const drv::registers& r, hvm_hw_cpu& cpu) {
  each_hvm_register([&](auto ours, auto theirs) { cpu.*theirs = r.*ours; });
  set_segment(cpu.cs_sel, cpu.cs_limit, cpu.cs_arbytes, r.cs);
  set_segment(cpu.ss_sel, cpu.ss_limit, cpu.ss_arbytes, r.ss);
  set_segment(cpu.ds_sel, cpu.ds_limit, cpu.ds_arbytes, r.ds);
  set_segment(cpu.es_sel, cpu.es_limit, cpu.es_arbytes, r.es);
  set_segment(cpu.fs_sel, cpu.fs_limit, cpu.fs_arbytes, r.fs);
  set_segment(cpu.gs_sel, cpu.gs_limit, cpu.gs_arbytes, r.gs);
  cpu.cs_base = r.cs_base;
  cpu.ss_base = r.ss_base;
  cpu.ds_base = r.ds_base;
  cpu.es_base = r.es_base;
  cpu.gdtr_limit = r.gdtr_limit;
}

}  // namespace vmitap::xen
