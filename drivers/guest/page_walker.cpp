#include "drivers/guest/page_walker.hpp"

#include "drivers/error.hpp"
#include "drivers/guest/guest_abi.hpp"

#include <algorithm>
#include <cstring>

namespace vmitap::drv {

const char* to_string(translation_fault f) {
  switch (f) {
    case translation_fault::none:
      return "none";
    case translation_fault::non_canonical:
      return "non_canonical";
    case translation_fault::not_present:
      return "not_present";
    case translation_fault::not_ram:
      return "not_ram";
    case translation_fault::read_failed:
      return "read_failed";
  }
  return "unknown";
}

translation_fault page_walker::read_physical(uint64_t pa, std::span<std::byte> out) {
  ++reads_;
  auto err = session_.read_physical(pa, out);
  if (!err)
    return translation_fault::none;
  return code_of(err) == ec::gfn_out_of_range ? translation_fault::not_ram
                                              : translation_fault::read_failed;
}

translation_fault page_walker::read_entry(uint64_t pa, uint64_t& entry) {
  for (auto& [at, value] : entries_)
    if (at == pa) {
      entry = value;
      return translation_fault::none;
    }
  std::byte raw[8];
  if (auto f = read_physical(pa, raw); f != translation_fault::none)
    return f;
  std::memcpy(&entry, raw, sizeof entry);  // x86 is little-endian, as the host
  entries_.emplace_back(pa, entry);
  return translation_fault::none;
}

translation page_walker::translate(uint64_t cr3, uint64_t va) {
  if (!canonical(va))
    return {0, translation_fault::non_canonical, va, 0};
  uint64_t table = pml4_of(cr3);
  for (uint8_t level = 4; level >= 1; --level) {
    uint64_t entry = 0;
    uint64_t entry_pa = table + 8 * table_index(va, level);
    if (auto f = read_entry(entry_pa, entry); f != translation_fault::none)
      return {0, f, va, level};
    if (!(entry & pte::present))
      return {0, translation_fault::not_present, va, level, entry_pa};
    // PS in a PDPTE (1 GiB) or PDE (2 MiB) ends the walk; in a PML4E it is reserved.
    if (level <= 3 && level >= 2 && (entry & pte::large)) {
      uint64_t span = uint64_t{1} << (12 + 9 * (level - 1));
      return {(entry & pte::address_mask & ~(span - 1)) | (va & (span - 1)),
              translation_fault::none, va, level, entry_pa};
    }
    table = entry & pte::address_mask;
    if (level == 1)
      return {table | (va & page_mask), translation_fault::none, va, 1, entry_pa};
  }
  return {};  // not reached: level 1 returned
}

translation page_walker::read(uint64_t cr3, uint64_t va, std::span<std::byte> out) {
  size_t done = 0;
  translation last{0, translation_fault::none, va, 0};
  while (done < out.size()) {
    uint64_t at = va + done;
    auto t = translate(cr3, at);
    if (!t)
      return t;
    size_t chunk = std::min<uint64_t>(out.size() - done, page_size - (at & page_mask));
    if (auto f = read_physical(t.pa, out.subspan(done, chunk)); f != translation_fault::none)
      return {t.pa, f, at, 0};
    if (done == 0)
      last = t;
    done += chunk;
  }
  return last;
}

}  // namespace vmitap::drv
