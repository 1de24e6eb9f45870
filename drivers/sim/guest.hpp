#pragma once

// The simulated guest's memory as a VMI tool sees it: a store of the pages the sim writes
// (page tables, stacks, strings), x86-64 four-level page tables over guest RAM (the kernel's
// linear map, shared by every process, with a loadable module's pages behind PTEs of their
// own, and each process's own user half), each function's signature, and the ground truth of
// the calls the VCPUs set up (guest.cpp, calls.cpp).

#include "drivers/guest/guest_abi.hpp"
#include "drivers/sim/kernel.hpp"
#include "drivers/sim/program.hpp"

#include <array>
#include <atomic>
#include <bit>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace vmitap::sim {

struct domain_config;

/// What one argument of a simulated function is.
enum class arg_kind : uint8_t {
  integer,
  ascii,  ///< a pointer to a NUL-terminated string of printable ASCII
  utf16,  ///< a pointer to a NUL-terminated UTF-16LE string (printable, BMP)
};

inline constexpr unsigned max_args = 8;
inline constexpr unsigned max_string_chars = 48;  ///< the NUL not counted

/// A function's parameters, drawn from the workload's seed.
struct signature {
  uint8_t arity = 0;
  std::array<arg_kind, max_args> kinds{};
  bool returned_early = false;  ///< a monitor's SET_REGISTERS returned from it (rip = its
                                ///< return address) before its own `ret`
  uint64_t returned_rax = 0;    ///< with this rax
};

/// A string the guest passes: its bytes in guest memory (the NUL included) and its UTF-8.
struct guest_string {
  std::array<std::byte, 2 * (max_string_chars + 1)> bytes{};
  uint8_t size = 0;
  std::string text;
};

/// The strings callers pass, drawn from the seed: 1 to 48 printable characters; UTF-16 ones
/// have some beyond ASCII (Latin-1, Greek, Cyrillic, CJK; all in the BMP). Drawn once, so a
/// call costs a copy, not a random draw per character.
struct string_pool {
  static constexpr size_t size = 256;  // each kind
  std::vector<guest_string> ascii;
  std::vector<guest_string> utf16;
};
string_pool make_string_pool(uint64_t seed);

/// One function entry as its caller set it up (domain_config::record_calls): what a tool that
/// reads the arguments at the entry must find. Slots from `arity` on are empty.
struct call_record {
  uint64_t entry_pa = 0;
  uint8_t arity = 0;
  std::array<uint64_t, max_args> args{};   ///< as the callee finds them (registers, stack)
  std::array<std::string, max_args> text;  ///< UTF-8 of a string argument; empty if not a
                                           ///< string or not mapped
  std::array<bool, max_args> mapped{};     ///< false: points into the not-present page
                                           ///< (true for every other argument)
  std::array<arg_kind, max_args> kinds{};
  bool returned_early = false;  ///< a monitor's SET_REGISTERS returned from it (rip = its
                                ///< return address) before its own `ret`
  uint64_t returned_rax = 0;    ///< with this rax
  uint32_t process = 0;         ///< the process the VCPU ran it in (its thread: the VCPU's)
};

/// Stack bytes a caller reserves for its callee's arguments: those beyond the registers and,
/// under Microsoft x64, the 32 bytes of shadow space under them (whatever the arity).
inline uint64_t caller_area(const signature& sig, drv::calling_convention cc) {
  auto in_registers = drv::register_args(cc);
  uint64_t on_stack = sig.arity > in_registers ? sig.arity - in_registers : 0;
  return (cc == drv::calling_convention::ms_x64 ? 32 : 0) + 8 * on_stack;
}

inline constexpr uint64_t page_words = drv::page_size / 8;
using page_image = std::array<uint64_t, page_words>;

/// The pages the sim writes, at consecutive gfns. Words are relaxed atomics: a VCPU's guest
/// thread writes its stack and string pages while vmitap's pollers may read any page, and a
/// reader that took the VCPU's request (release/acquire through the ring) sees every write
/// made before it. Each page has one writer at a time: its VCPU's thread, under its lock.
/// The pages live in a memory file, so a fake Xen can map them as Xen maps a guest's: live,
/// not a copy taken at map time.
class guest_memory {
  static_assert(std::endian::native == std::endian::little, "the guest is x86");

public:
  guest_memory() = default;
  /// Holds `pages.size()` pages from `first`, with these contents.
  guest_memory(drv::gfn_t first, std::span<const page_image> pages);
  ~guest_memory();
  guest_memory(const guest_memory&) = delete;
  guest_memory& operator=(const guest_memory&) = delete;

  /// The memory file and the offset of `gfn` in it, for a shared mapping (held pages only).
  int fd() const { return fd_; }
  uint64_t file_offset(drv::gfn_t gfn) const { return (gfn - first_) * drv::page_size; }

  bool holds(drv::gfn_t gfn) const { return gfn - first_ < count_; }
  /// The range must be in held pages.
  void read(uint64_t pa, std::span<std::byte> out) const;
  void write(uint64_t pa, std::span<const std::byte> in);
  uint64_t read64(uint64_t pa) const {
    return word(pa).load(std::memory_order_relaxed);  // 8-aligned
  }
  void write64(uint64_t pa, uint64_t value) {
    word(pa).store(value, std::memory_order_relaxed);  // 8-aligned
  }
  /// Sets `bits` in the word at `pa` (8-aligned) as one atomic operation, as the processor
  /// sets a page-table entry's accessed bit; returns the word as it was.
  uint64_t fetch_or64(uint64_t pa, uint64_t bits) {
    return word(pa).fetch_or(bits, std::memory_order_relaxed);
  }

private:
  std::atomic<uint64_t>& word(uint64_t pa) const {
    return words_[(drv::gfn_of(pa) - first_) * page_words + (pa & drv::page_mask) / 8];
  }

  drv::gfn_t first_ = 0;
  uint64_t count_ = 0;
  int fd_ = -1;
  std::atomic<uint64_t>* words_ = nullptr;  // the file, mapped shared
};

// User address space of every process (4 KiB pages): a not-present page, then one string
// buffer per VCPU, each followed by unmapped space; the stacks lie below `user_stack_top`,
// one per VCPU, each with an unmapped guard page under it. Every process maps every VCPU's:
// each process has a thread for each VCPU, and a VCPU switching processes keeps its pages.
inline constexpr uint64_t user_strings_base = 0x0000'7ffd'8000'0000ULL;  ///< the not-present page
inline constexpr uint64_t user_stack_top = 0x0000'7ffd'ff00'0000ULL;
inline constexpr uint64_t user_slot_stride = 0x10000;  ///< between string buffers
inline constexpr unsigned string_pages = 4;            ///< per VCPU, used as a ring
inline constexpr unsigned min_stack_pages = 4;
/// The kernel's linear map ends at the top of the address space: RAM beyond it is unmapped.
inline constexpr uint64_t max_linear_bytes = uint64_t{2} << 30;

struct process_layout {
  uint64_t cr3 = 0;          ///< its PML4's physical address
  uint64_t unmapped_va = 0;  ///< a user page whose PTE is not present
};

struct vcpu_layout {
  uint32_t process = 0;  ///< at boot VCPU i runs in process i % processes
  uint64_t stack_low = 0;
  uint64_t stack_top = 0;              ///< [stack_low, stack_top) is mapped
  std::vector<drv::gfn_t> stack_gfns;  ///< [i] backs stack_low + i pages
  uint64_t strings_va = 0;             ///< its user string buffer
  std::array<drv::gfn_t, string_pages> string_gfns{};
  drv::gfn_t kernel_strings_gfn = 0;  ///< its kernel string page, in the kernel's map of RAM
  drv::gfn_t percpu_gfn = 0;          ///< its per-CPU area (Linux) or KPCR (Windows)
};

/// Where everything is; fixed when the domain is created.
struct guest_layout {
  drv::gfn_t first_reserved_gfn = 0;  ///< page tables, stacks, string pages: up to the top of
  drv::gfn_t last_reserved_gfn = 0;   ///< RAM (of the linear map's part of it)
  uint64_t linear_bytes = 0;          ///< RAM mapped at kernel.va_of(0)
  sim_kernel kernel;
  std::vector<process_layout> processes;
  /// [process][vcpu]: the thread's task_struct (Linux) or ETHREAD (Windows).
  std::vector<std::vector<drv::gfn_t>> thread_gfns;
  std::vector<drv::gfn_t> eprocess_gfns;  ///< Windows: per process
  std::vector<vcpu_layout> vcpus;
  std::vector<signature> signatures;  ///< per function
  uint32_t max_call_depth = 0;        ///< frames, the root's included
  /// The loadable module's pages (program::first_module_gfn() on) are mapped by 4 KiB PTEs,
  /// present only while it is in: [i] is where the PTE of its page i is. Each 2 MiB region
  /// holding module pages has a page table of its own (its other pages present, their
  /// accessed bits set); `module_table_gfns` are those tables, ascending.
  drv::gfn_t first_module_gfn = 0;
  std::vector<uint64_t> module_ptes;
  std::vector<drv::gfn_t> module_table_gfns;
  /// The physical address of the PTE that maps module page `gfn`.
  uint64_t module_pte_pa(drv::gfn_t gfn) const { return module_ptes[gfn - first_module_gfn]; }
  /// Where the module loader's page-table stores are (their rip: kernel.va_of of it).
  uint64_t loader_store_pa = 0;
};

/// The guest as built: its layout and the reserved pages' contents (from first_reserved_gfn).
struct guest_image {
  guest_layout layout;
  std::vector<page_image> pages;
  page_image image_page{};  ///< at layout.kernel.image_gfn
};

/// Builds the page tables and reserves the pages at the top of RAM. Fails (invalid_argument,
/// saying how much memory it needs) if they would reach the code and data.
caf::expected<guest_image> build_guest(const domain_config& cfg, const program& code);

}  // namespace vmitap::sim
