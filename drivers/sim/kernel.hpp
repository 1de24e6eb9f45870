#pragma once

// The simulated guest's kernel, as a VMI tool finds a real one: its functions have names, its
// image is mapped at a KASLR slide, MSR_LSTAR holds its syscall entry, a banner (Linux) or a PE
// header with a CodeView record (Windows) names its build, a per-CPU area (Linux) or KPCR
// (Windows) per VCPU names the running thread, and task / process structures hold the
// processes the VCPUs switch between. The flavour follows the domain's calling convention.

#include "drivers/guest/profile.hpp"
#include "drivers/sim/program.hpp"

#include <array>
#include <string>
#include <vector>

namespace vmitap::sim {

struct domain_config;

/// The flavour a domain's kernel has: System V guests run Linux, Microsoft x64 ones Windows.
drv::kernel_os kernel_os_of(const domain_config& cfg);

/// Field offsets of the simulated kernel's structures (written to its ISF by
/// `kernel_profile_json`, read back by vmitap through that profile).
namespace layout_of {
// Linux
inline constexpr uint64_t current_task = 0x7c0;  ///< per-CPU offset (the symbol's value)
inline constexpr uint64_t task_pid = 0x5c8;
inline constexpr uint64_t task_tgid = 0x5cc;
inline constexpr uint64_t task_real_parent = 0x5d8;
inline constexpr uint64_t task_comm = 0x790;  ///< 16 bytes, NUL-padded
// Windows
inline constexpr uint64_t kpcr_prcb = 0x180;
inline constexpr uint64_t kprcb_current_thread = 0x8;
inline constexpr uint64_t kthread_process = 0x220;
inline constexpr uint64_t ethread_cid = 0x478;
inline constexpr uint64_t client_id_unique_process = 0x0;
inline constexpr uint64_t client_id_unique_thread = 0x8;
inline constexpr uint64_t eprocess_unique_process_id = 0x440;
inline constexpr uint64_t eprocess_inherited_from = 0x540;
inline constexpr uint64_t eprocess_image_file_name = 0x5a8;  ///< 15 bytes
// The image's first page (the kernel's lowest physical page): the banner's place, or the
// PE header, its debug directory and the CodeView record.
inline constexpr uint64_t banner_offset = 0x100;
inline constexpr uint64_t pe_header_offset = 0x80;
inline constexpr uint64_t debug_directory_offset = 0x200;
inline constexpr uint64_t codeview_offset = 0x240;
/// The module loader's store instruction (the rip of its page-table writes): no program
/// instruction is there, so no breakpoint is either.
inline constexpr uint64_t loader_store_offset = 0xf00;
}  // namespace layout_of

/// One process of the guest; thread `v` of it is the one VCPU `v` runs when in it.
struct sim_process {
  uint32_t pid = 0;
  uint32_t ppid = 0;
  std::string name;  ///< comm / ImageFileName: at most 15 characters
  uint32_t tid(uint32_t vcpu, drv::kernel_os os) const {
    return os == drv::kernel_os::windows_kernel ? pid + 4 * (vcpu + 1) : pid + vcpu;
  }
};

/// What the kernel is, fixed when the domain is built.
struct sim_kernel {
  drv::kernel_os os = drv::kernel_os::linux_kernel;
  uint64_t slide = 0;          ///< runtime virtual address = link-time one + slide
  drv::gfn_t image_gfn = 0;    ///< the image's first page, just below the code
  uint32_t syscall_entry = 0;  ///< the function MSR_LSTAR points at
  std::vector<std::string> function_names;
  std::string banner;     ///< Linux
  drv::pdb_identity pdb;  ///< Windows
  std::vector<sim_process> processes;

  /// Runtime virtual address of `pa` in the kernel's map of RAM.
  uint64_t va_of(uint64_t pa) const { return kernel_base + slide + pa; }
  /// The physical address a kernel virtual address maps, if it is in the map.
  uint64_t pa_of(uint64_t va) const { return va - kernel_base - slide; }
  /// What an ISF says a symbol at `pa` is: Linux its link-time virtual address, Windows
  /// its offset from the image base.
  uint64_t symbol_value(uint64_t pa) const {
    return os == drv::kernel_os::windows_kernel ? pa - drv::pa_of(image_gfn) : kernel_base + pa;
  }
};

/// The kernel of a guest built from `cfg`: names, slide (2 MiB aligned, drawn from the seed
/// and the domain's name, as a boot draws it), identity and processes. `linear_bytes` is how
/// much RAM its map covers: the slide keeps the map below the top of the address space.
sim_kernel make_kernel(const domain_config& cfg, const program& code, uint64_t linear_bytes);

/// The image's first page: the banner, or the PE header with its CodeView record.
std::array<uint64_t, drv::page_size / 8> image_page(const sim_kernel& k);

/// The ISF (Volatility 3 format 6.2) of the kernel `cfg` builds: what `vmitap sim-profile`
/// writes and a profile-driven config reads.
caf::expected<std::string> kernel_profile_json(const domain_config& cfg);

}  // namespace vmitap::sim
