#pragma once

// The running kernel, found from a VCPU's registers and checked against its profile: Linux
// by its KASLR slide (MSR_LSTAR − entry_SYSCALL_64) and linux_banner, Windows by its image
// base (MSR_LSTAR − KiSystemCall64Shadow or KiSystemCall64) and the PE header's CodeView
// GUID and age. Then: a symbol's runtime address, and the process a paused VCPU runs.

#include "drivers/guest/page_walker.hpp"
#include "drivers/guest/profile.hpp"

#include <caf/expected.hpp>

#include <string>

namespace vmitap::drv {

/// Where the profile's structures are, resolved once so that a hit reads without lookups.
struct process_offsets {
  // Linux: gs_base + current_task → task_struct
  uint64_t current_task = 0;
  uint64_t pid = 0, tgid = 0, real_parent = 0, comm = 0;
  // Windows: gs_base (KPCR) + current_thread → ETHREAD; its process; its CLIENT_ID
  uint64_t current_thread = 0, thread_process = 0, thread_cid_thread = 0;
  uint64_t process_id = 0, parent_id = 0, image_file_name = 0;
};

/// The kernel as found at attach.
struct kernel_map {
  kernel_os os = kernel_os::linux_kernel;
  uint64_t slide = 0;       ///< Linux: runtime − link-time virtual address
  uint64_t image_base = 0;  ///< Windows: the image's runtime base (symbols are offsets)
  uint64_t cr3 = 0;         ///< of the kernel-mode VCPU it was found through
  vcpu_id vcpu = 0;
  std::string identity;  ///< what matched: the banner, or "ntkrnlmp.pdb GUID age N"
  process_offsets offsets;
  bool reads_processes = false;  ///< the profile has every field process_at needs

  /// The runtime virtual address of a symbol whose profile value is `value`.
  uint64_t va_of(uint64_t value) const {
    return os == kernel_os::windows_kernel ? image_base + value : value + slide;
  }
};

/// Finds the kernel through the first of `vcpus` VCPUs in kernel mode (CPL 0: under KPTI a
/// user-mode VCPU's tables do not map the kernel). The domain must be paused. Fails with
/// ec::no_kernel_mode_vcpu if none is (the caller may resume the domain and retry), with
/// ec::kernel_not_found if the profile lacks what the search needs, and with
/// ec::profile_mismatch (expected vs found) if the kernel is another build.
caf::expected<kernel_map> locate_kernel(domain_session& session, const kernel_profile& profile,
                                        uint32_t vcpus);

/// The cr3 of a VCPU in kernel mode now whose tables map the kernel (its MSR_LSTAR
/// translates): what to walk with while the guest runs, long after attach.
caf::expected<uint64_t> kernel_cr3(domain_session& session, uint32_t vcpus);

/// Who runs on a paused VCPU.
struct process_info {
  uint32_t pid = 0;   ///< Linux tgid, Windows UniqueProcessId
  uint32_t tid = 0;   ///< Linux pid, Windows Cid.UniqueThread
  uint32_t ppid = 0;  ///< the parent's (Linux real_parent's tgid; Windows InheritedFrom…)
  std::string name;   ///< Linux comm, Windows ImageFileName (at most 15 bytes)
  bool operator==(const process_info&) const = default;
};

/// Reads the process at a VCPU paused with `regs`, through its per-CPU area or KPCR. Fails
/// with the address that could not be read.
caf::expected<process_info> process_at(page_walker& walker, const registers& regs,
                                       const kernel_map& kernel);

}  // namespace vmitap::drv
