#include "drivers/guest/kernel.hpp"

#include "drivers/error.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>

namespace vmitap::drv {

namespace {

/// A guest read that says where it failed.
class reader {
public:
  reader(page_walker& w, uint64_t cr3) : walker_(w), cr3_(cr3) {}

  caf::error bytes(uint64_t va, std::span<std::byte> out) {
    auto t = walker_.read(cr3_, va, out);
    if (t)
      return {};
    char where[64];
    std::snprintf(where, sizeof where, "0x%llx", static_cast<unsigned long long>(t.va));
    return make_error(
      t.fault == translation_fault::not_present ? ec::not_mapped : ec::gfn_out_of_range,
      std::string("reading ") + where + ": " + to_string(t.fault));
  }
  template <class T>
  caf::expected<T> value(uint64_t va) {
    T out{};
    if (auto err = bytes(va, std::as_writable_bytes(std::span{&out, 1})))
      return err;
    return out;
  }
  caf::expected<std::string> text(uint64_t va, size_t max) {
    std::string out(max, '\0');
    if (auto err = bytes(va, std::as_writable_bytes(std::span{out.data(), out.size()})))
      return err;
    out.resize(std::strlen(out.c_str()));
    return out;
  }

private:
  page_walker& walker_;
  uint64_t cr3_;
};

std::string hex(uint64_t v) {
  char out[24];
  std::snprintf(out, sizeof out, "0x%llx", static_cast<unsigned long long>(v));
  return out;
}

/// Shows a banner on one line, control characters escaped.
std::string quoted(std::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s)
    out += c >= 0x20 && c < 0x7f ? std::string(1, char(c)) : c == '\n' ? "\\n" : "?";
  return out + "\"";
}

bool kernel_mode(const registers& r) {
  return (r.cs.sel & 3) == 0;
}

// When the profile's addresses miss, the running kernel is looked for near its syscall entry
// (a kernel's text and rodata lie within tens of MiB of it), to say what runs instead.
constexpr uint64_t search_span = uint64_t{32} << 20;

/// The first "Linux version " banner within search_span of `lstar`, page by page (the range
/// clamped to the address space).
std::optional<std::string> find_banner(reader& mem, uint64_t lstar) {
  constexpr std::string_view marker = "Linux version ";
  constexpr uint64_t last_page = ~uint64_t{0} & ~page_mask;
  std::array<std::byte, page_size + 256> window;
  auto top = lstar & ~page_mask;
  auto lo = top > search_span ? top - search_span : 0;
  auto hi = top < last_page - search_span ? top + search_span : last_page;
  for (uint64_t i = 0, pages = (hi - lo) / page_size; i < pages; ++i) {
    auto va = lo + i * page_size;
    if (mem.bytes(va, std::span{window}.first(page_size)))
      continue;  // not mapped: nothing there
    // With the next page's start, so that a banner across the boundary is seen whole.
    size_t size =
      mem.bytes(va + page_size, std::span{window}.subspan(page_size)) ? page_size : window.size();
    std::string_view text{reinterpret_cast<const char*>(window.data()), size};
    auto at = text.find(marker);
    if (at == std::string_view::npos)
      continue;
    auto found = mem.text(va + at, 256);
    if (found)
      return *found;
  }
  return std::nullopt;
}

caf::error check_linux(reader& mem, const kernel_profile& p, kernel_map& k, uint64_t lstar) {
  auto entry = p.symbol("entry_SYSCALL_64");
  if (!entry)
    return make_error(ec::kernel_not_found, p.path + ": the profile has no entry_SYSCALL_64");
  k.slide = lstar - *entry;
  auto banner_at = p.symbol("linux_banner");
  if (!p.banner || !banner_at)
    return make_error(ec::kernel_not_found,
                      p.path +
                        ": the profile has no linux_banner (with constant_data) to check "
                        "the running kernel against");
  auto found = mem.text(*banner_at + k.slide, p.banner->size());
  if (found && *found == *p.banner) {
    k.identity = *found;
    return {};
  }
  // Another build: its entry is elsewhere, so its banner is too.
  auto running = find_banner(mem, lstar);
  return make_error(
    ec::profile_mismatch,
    "the running kernel is another build: expected banner " + quoted(*p.banner) + ", found " +
      (running ? quoted(*running) : "none within 32 MiB of MSR_LSTAR " + hex(lstar)));
}

/// The PDB identity (CodeView RSDS: GUID, age, name) of the PE image at `base`.
caf::expected<pdb_identity> codeview_of(reader& mem, uint64_t base) {
  auto mz = mem.value<uint16_t>(base);
  if (!mz)
    return std::move(mz.error());
  if (*mz != 0x5a4d)
    return make_error(ec::profile_mismatch, "no PE image (MZ) at " + hex(base));
  auto lfanew = mem.value<uint32_t>(base + 0x3c);
  if (!lfanew)
    return std::move(lfanew.error());
  auto nt = base + *lfanew;
  auto sig = mem.value<uint32_t>(nt);
  auto magic = mem.value<uint16_t>(nt + 24);
  if (!sig || !magic || *sig != 0x4550 || *magic != 0x20b)
    return make_error(ec::profile_mismatch, "no PE32+ header at " + hex(nt));
  auto dir = mem.value<std::array<uint32_t, 2>>(nt + 24 + 112 + 6 * 8);  // [DEBUG]
  if (!dir)
    return std::move(dir.error());
  for (uint32_t at = 0; at + 28 <= (*dir)[1] && at < 16 * 28; at += 28) {
    auto entry = mem.value<std::array<uint32_t, 7>>(base + (*dir)[0] + at);
    if (!entry)
      return std::move(entry.error());
    if ((*entry)[3] != 2)  // IMAGE_DEBUG_TYPE_CODEVIEW
      continue;
    auto cv = base + (*entry)[5];
    struct rsds {
      uint32_t signature;
      uint32_t data1;
      uint16_t data2, data3;
      uint8_t data4[8];
      uint32_t age;
    };
    auto r = mem.value<rsds>(cv);
    if (!r)
      return std::move(r.error());
    if (r->signature != 0x53445352)
      break;
    auto name = mem.text(cv + 24, 256);
    if (!name)
      return std::move(name.error());
    char guid[33];
    std::snprintf(guid, sizeof guid, "%08X%04X%04X", r->data1, r->data2, r->data3);
    std::string g = guid;
    for (auto b : r->data4) {
      char two[3];
      std::snprintf(two, sizeof two, "%02X", b);
      g += two;
    }
    return pdb_identity{g, r->age, *name};
  }
  return make_error(ec::profile_mismatch,
                    "the PE image at " + hex(base) + " has no CodeView record");
}

/// The PDB of the image MSR_LSTAR lies in: the nearest page below it with a PE header and a
/// CodeView record, within search_span (and above 0).
std::optional<pdb_identity> find_image(reader& mem, uint64_t lstar) {
  auto top = lstar & ~page_mask;
  for (uint64_t i = 0, pages = std::min(top, search_span) / page_size + 1; i < pages; ++i) {
    auto va = top - i * page_size;
    if (auto mz = mem.value<uint16_t>(va); mz && *mz == 0x5a4d)
      if (auto found = codeview_of(mem, va))
        return *found;
  }
  return std::nullopt;
}

caf::error check_windows(reader& mem, const kernel_profile& p, kernel_map& k, uint64_t lstar) {
  if (!p.pdb)
    return make_error(ec::kernel_not_found,
                      p.path + ": the profile names no PDB (metadata.windows.pdb)");
  auto id = [](const pdb_identity& x) {
    return x.database + " " + x.guid + " age " + std::to_string(x.age);
  };
  // pdbconv writes the GUID in upper case; other tools may not.
  auto same = [&](const pdb_identity& x) {
    return x.age == p.pdb->age &&
           std::equal(
             x.guid.begin(), x.guid.end(), p.pdb->guid.begin(), p.pdb->guid.end(),
             [](char a, char b) { return std::toupper(uint8_t(a)) == std::toupper(uint8_t(b)); });
  };
  bool any = false;
  // KVA shadow on: MSR_LSTAR is KiSystemCall64Shadow; off: KiSystemCall64.
  for (auto name : {"KiSystemCall64Shadow", "KiSystemCall64"}) {
    auto rva = p.symbol(name);
    if (!rva)
      continue;
    any = true;
    auto base = lstar - *rva;
    if (base & page_mask)
      continue;  // an image starts on a page: not this entry
    auto found = codeview_of(mem, base);
    if (found && same(*found)) {
      k.image_base = base;
      k.identity = id(*found);
      return {};
    }
  }
  if (!any)
    return make_error(ec::kernel_not_found,
                      p.path + ": the profile has neither KiSystemCall64Shadow nor KiSystemCall64");
  // Another build: its entries are elsewhere; the image around MSR_LSTAR says which it is.
  auto running = find_image(mem, lstar);
  return make_error(
    ec::profile_mismatch,
    "the running kernel is another build: expected " + id(*p.pdb) + ", found " +
      (running ? id(*running) : "no PE image within 32 MiB below MSR_LSTAR " + hex(lstar)));
}

/// The offsets process_at needs; false if the profile lacks one.
bool resolve_offsets(const kernel_profile& p, process_offsets& o) {
  auto get = [&](std::string_view type, std::string_view field, uint64_t& out) {
    auto v = p.offset(type, field);
    if (v)
      out = *v;
    return bool(v);
  };
  if (p.os == kernel_os::linux_kernel) {
    bool task = get("task_struct", "pid", o.pid) && get("task_struct", "tgid", o.tgid) &&
                get("task_struct", "real_parent", o.real_parent) &&
                get("task_struct", "comm", o.comm);
    // Before 6.2 current_task is a per-CPU symbol; since, a field of the per-CPU pcpu_hot.
    if (auto ct = p.symbol("current_task")) {
      o.current_task = *ct;
    } else {
      auto hot = p.symbol("pcpu_hot");
      uint64_t field = 0;
      if (!hot || !get("pcpu_hot", "current_task", field))
        return false;
      o.current_task = *hot + field;
    }
    return task;
  }
  uint64_t prcb = 0, current = 0, cid = 0, cid_thread = 0;
  bool ok = get("_KPCR", "Prcb", prcb) && get("_KPRCB", "CurrentThread", current) &&
            get("_KTHREAD", "Process", o.thread_process) && get("_ETHREAD", "Cid", cid) &&
            get("_CLIENT_ID", "UniqueThread", cid_thread) &&
            get("_EPROCESS", "UniqueProcessId", o.process_id) &&
            get("_EPROCESS", "InheritedFromUniqueProcessId", o.parent_id) &&
            get("_EPROCESS", "ImageFileName", o.image_file_name);
  o.current_thread = prcb + current;
  o.thread_cid_thread = cid + cid_thread;
  return ok;
}

}  // namespace

caf::expected<kernel_map> locate_kernel(domain_session& session, const kernel_profile& profile,
                                        uint32_t vcpus) {
  std::optional<vcpu_id> unset;  // in kernel mode, MSR_LSTAR not set up (a CPU still booting)
  caf::error unreadable;         // the first VCPU whose registers could not be read
  uint32_t readable = 0;
  std::string unmapped;  // VCPUs in kernel mode whose tables do not map the kernel
  for (vcpu_id v = 0; v < vcpus; ++v) {
    auto regs = session.vcpu_registers(v);
    if (!regs) {
      if (domain_gone(regs.error()))
        return std::move(regs.error());
      if (!unreadable)  // a VCPU that is down (not brought up, unplugged): try the others
        unreadable = std::move(regs.error());
      continue;
    }
    ++readable;
    if (!kernel_mode(*regs))
      continue;
    if (regs->msr_lstar == 0) {
      unset = unset.value_or(v);
      continue;
    }
    kernel_map k;
    k.os = profile.os;
    k.cr3 = regs->cr3;
    k.vcpu = v;
    page_walker walker{session};
    // At the syscall entry, before its cr3 switch, a VCPU under KPTI is in kernel mode with
    // the user's tables, which do not map the kernel: pass it over as one in user mode.
    if (!walker.translate(regs->cr3, regs->msr_lstar)) {
      unmapped += (unmapped.empty() ? "" : ", ") + std::to_string(v);
      continue;
    }
    reader mem{walker, regs->cr3};
    auto err = profile.os == kernel_os::linux_kernel
                 ? check_linux(mem, profile, k, regs->msr_lstar)
                 : check_windows(mem, profile, k, regs->msr_lstar);
    if (err)
      return err;
    k.reads_processes = resolve_offsets(profile, k.offsets);
    return k;
  }
  if (!unmapped.empty())  // e.g. at the syscall entry before the cr3 switch: look again later
    return make_error(ec::no_kernel_mode_vcpu,
                      "waiting for a VCPU in kernel mode whose page tables map the kernel (VCPUs " +
                        unmapped + " in kernel mode do not: a user cr3 under KPTI)");
  if (unset)
    return make_error(ec::kernel_not_found, "VCPU " + std::to_string(*unset) +
                                              " is in kernel mode but MSR_LSTAR is 0 (and no "
                                              "other VCPU in kernel mode has it): the kernel has "
                                              "not set up system calls yet");
  if (readable == 0 && unreadable)
    return unreadable;  // no VCPU's registers could be read at all
  return make_error(ec::no_kernel_mode_vcpu, "waiting for a VCPU in kernel mode: all " +
                                               std::to_string(vcpus) + " are in user mode");
}

caf::expected<uint64_t> kernel_cr3(domain_session& session, uint32_t vcpus) {
  for (vcpu_id v = 0; v < vcpus; ++v) {
    auto regs = session.vcpu_registers(v);
    if (!regs && domain_gone(regs.error()))
      return std::move(regs.error());
    if (!regs || !kernel_mode(*regs) || regs->msr_lstar == 0)
      continue;
    page_walker walker{session};
    if (walker.translate(regs->cr3, regs->msr_lstar))
      return regs->cr3;
  }
  return make_error(ec::no_kernel_mode_vcpu,
                    "no VCPU is in kernel mode with tables that map the kernel right now");
}

caf::expected<process_info> process_at(page_walker& walker, const registers& regs,
                                       const kernel_map& k) {
  const auto& o = k.offsets;
  reader mem{walker, regs.cr3};
  // The kernel's GS base is a kernel address: in user mode, and at the syscall entry before
  // swapgs, it is the one put aside (a user GS base, the process's own, is never trusted).
  auto gs = (regs.gs_base >> 63) ? regs.gs_base : regs.shadow_gs;
  process_info out;
  if (k.os == kernel_os::linux_kernel) {
    auto task = mem.value<uint64_t>(gs + o.current_task);
    if (!task)
      return std::move(task.error());
    auto pid = mem.value<int32_t>(*task + o.tgid);
    auto tid = mem.value<int32_t>(*task + o.pid);
    auto parent = mem.value<uint64_t>(*task + o.real_parent);
    auto comm = mem.text(*task + o.comm, 16);
    if (!pid || !tid || !parent || !comm)
      return make_error(ec::not_mapped, "task_struct at " + hex(*task) + " cannot be read");
    out = {uint32_t(*pid), uint32_t(*tid), 0, std::move(*comm)};
    if (*parent != 0) {
      auto ppid = mem.value<int32_t>(*parent + o.tgid);
      if (!ppid)
        return std::move(ppid.error());
      out.ppid = uint32_t(*ppid);
    }
    return out;
  }
  auto thread = mem.value<uint64_t>(gs + o.current_thread);
  if (!thread)
    return std::move(thread.error());
  auto process = mem.value<uint64_t>(*thread + o.thread_process);
  auto tid = mem.value<uint64_t>(*thread + o.thread_cid_thread);
  if (!process || !tid)
    return make_error(ec::not_mapped, "ETHREAD at " + hex(*thread) + " cannot be read");
  auto pid = mem.value<uint64_t>(*process + o.process_id);
  auto ppid = mem.value<uint64_t>(*process + o.parent_id);
  auto name = mem.text(*process + o.image_file_name, 15);
  if (!pid || !ppid || !name)
    return make_error(ec::not_mapped, "EPROCESS at " + hex(*process) + " cannot be read");
  return process_info{uint32_t(*pid), uint32_t(*tid), uint32_t(*ppid), std::move(*name)};
}

}  // namespace vmitap::drv
