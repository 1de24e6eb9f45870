#pragma once

// Guest virtual memory over the port's physical reads: a 4-level page walk for a given cr3
// (4 KiB, 2 MiB and 1 GiB pages). A walk that cannot finish says where and why; it never
// throws. The entries it reads are cached for its own lifetime, which is one VCPU pause: a
// resumed guest may change its tables, so a walker is never kept across a resume.

#include "drivers/driver.hpp"

#include <cstddef>
#include <span>
#include <vector>

namespace vmitap::drv {

enum class translation_fault : uint8_t {
  none,
  non_canonical,  ///< bits 63:47 differ: no page table maps it
  not_present,    ///< an entry on the way has its present bit clear
  not_ram,        ///< a table or the data lies outside guest RAM
  read_failed,    ///< the hypervisor refused the read (domain gone, …)
};
const char* to_string(translation_fault f);

struct translation {
  uint64_t pa = 0;
  translation_fault fault = translation_fault::none;
  uint64_t va = 0;    ///< on a fault: the address that could not be read
  uint8_t level = 0;  ///< not_present: the table level whose entry was clear (4 = PML4);
                      ///< success: the level that mapped it (1: a 4 KiB page)
  /// The last table entry the walk read: the one that mapped the page, or the clear one.
  /// Who watches that entry sees the translation change.
  uint64_t entry_pa = 0;
  explicit operator bool() const { return fault == translation_fault::none; }
};

class page_walker {
public:
  explicit page_walker(domain_session& session) : session_(session) {}

  translation translate(uint64_t cr3, uint64_t va);
  /// Reads `out.size()` bytes at `va`, page by page. On a fault, `out` holds what was read
  /// before it and the result says where.
  translation read(uint64_t cr3, uint64_t va, std::span<std::byte> out);
  /// Physical reads made, table entries included (what the cache saves).
  size_t reads() const { return reads_; }

private:
  translation_fault read_entry(uint64_t pa, uint64_t& entry);
  translation_fault read_physical(uint64_t pa, std::span<std::byte> out);

  domain_session& session_;
  // A walk reads at most four entries; a capture plan a few walks: a flat list is enough.
  std::vector<std::pair<uint64_t, uint64_t>> entries_;  // entry pa → entry
  size_t reads_ = 0;
};

}  // namespace vmitap::drv
