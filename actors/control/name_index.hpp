#pragma once

// Breakpoints by name, as compact as it can be: an open-addressing table of pointers to the
// breakpoints themselves (the registry's table keeps them alive). About 11 bytes a breakpoint.

#include "actors/model/breakpoint.hpp"

#include <bit>
#include <string_view>
#include <vector>

namespace vmitap {

class name_index {
public:
  const breakpoint* find(std::string_view name) const {
    if (slots_.empty())
      return nullptr;
    for (size_t i = hash(name) & mask(), probes = 0; probes < slots_.size();
         i = (i + 1) & mask(), ++probes) {
      auto* s = slots_[i];
      if (s == nullptr)
        return nullptr;
      if (s != tombstone() && s->name == name)
        return s;
    }
    return nullptr;
  }

  /// `bp`'s name must not be in the index.
  void insert(const breakpoint* bp) {
    if ((used_ + tombstones_ + 1) * 8 > slots_.size() * 7)
      rehash(std::max<size_t>(16, std::bit_ceil((used_ + 1) * 2)));
    auto i = hash(bp->name) & mask();
    while (slots_[i] != nullptr && slots_[i] != tombstone())
      i = (i + 1) & mask();
    tombstones_ -= slots_[i] == tombstone();
    slots_[i] = bp;
    ++used_;
  }

  void erase(const breakpoint* bp) {
    if (slots_.empty())
      return;
    for (size_t i = hash(bp->name) & mask(); slots_[i] != nullptr; i = (i + 1) & mask()) {
      if (slots_[i] == bp) {
        slots_[i] = tombstone();
        --used_;
        ++tombstones_;
        return;
      }
    }
  }

  void clear() {
    slots_.clear();
    used_ = tombstones_ = 0;
  }
  size_t size() const { return used_; }

private:
  static const breakpoint* tombstone() { return reinterpret_cast<const breakpoint*>(uintptr_t{1}); }
  static size_t hash(std::string_view s) { return std::hash<std::string_view>{}(s); }
  size_t mask() const { return slots_.size() - 1; }

  void rehash(size_t capacity) {
    std::vector<const breakpoint*> old;
    old.swap(slots_);
    slots_.assign(capacity, nullptr);
    used_ = tombstones_ = 0;
    for (auto* s : old)
      if (s != nullptr && s != tombstone())
        insert(s);
  }

  std::vector<const breakpoint*> slots_;
  size_t used_ = 0;
  size_t tombstones_ = 0;
};

}  // namespace vmitap
