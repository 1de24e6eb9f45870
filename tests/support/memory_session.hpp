#pragma once

// A domain session that is only guest RAM: a sparse page map that tests and fuzzers write and
// read_physical reads. Every other call is refused.

#include "drivers/driver.hpp"
#include "drivers/error.hpp"

#include <algorithm>
#include <array>
#include <cstring>
#include <map>
#include <vector>

namespace vmitap::testing {

/// Guest RAM as a page map; everything but physical reads is refused.
class memory_session : public drv::domain_session {
public:
  explicit memory_session(uint64_t ram = 64ull << 20) : ram_bytes(ram) {}
  const uint64_t ram_bytes;

  void write(uint64_t pa, const void* data, size_t n) {
    auto* in = static_cast<const std::byte*>(data);
    while (n > 0) {  // a page at a time
      auto chunk = std::min<size_t>(n, drv::page_size - (pa & drv::page_mask));
      std::memcpy(page(pa).data() + (pa & drv::page_mask), in, chunk);
      pa += chunk;
      in += chunk;
      n -= chunk;
    }
  }
  void write64(uint64_t pa, uint64_t v) { write(pa, &v, 8); }

  caf::error read_physical(uint64_t pa, std::span<std::byte> out) override {
    ++reads;
    if (pa > ram_bytes || out.size() > ram_bytes - pa)
      return make_error(ec::gfn_out_of_range, "read_physical: not guest RAM");
    for (size_t i = 0; i < out.size(); ++i) {
      auto p = pages_.find(drv::gfn_of(pa + i));
      out[i] = p == pages_.end() ? std::byte{0} : p->second[(pa + i) & drv::page_mask];
    }
    return {};
  }

  drv::domain_info info() const override { return {}; }
  caf::expected<drv::view_id> create_view(drv::page_access) override { return refused(); }
  caf::error destroy_view(drv::view_id) override { return refused(); }
  caf::error switch_all(drv::view_id) override { return refused(); }
  caf::error get_access(drv::view_id, std::span<const drv::gfn_t>,
                        std::span<drv::page_access>) override {
    return refused();
  }
  caf::error set_access(drv::view_id, std::span<const drv::access_change>) override {
    return refused();
  }
  caf::error set_singlestep(drv::vcpu_id, bool) override { return refused(); }
  caf::expected<drv::event_ring*> start_events() override { return refused(); }
  caf::error pause() override { return refused(); }
  caf::error resume() override { return refused(); }
  caf::error detach() override { return {}; }
  caf::expected<drv::registers> vcpu_registers(drv::vcpu_id vcpu) override {
    if (vcpu >= vcpus.size())
      return make_error(ec::no_such_vcpu, "vcpu_registers: no such VCPU");
    return vcpus[vcpu];
  }

  std::vector<drv::registers> vcpus;  ///< what vcpu_registers reports

  size_t reads = 0;

private:
  static caf::error refused() { return make_error(ec::invalid_argument, "not in this test"); }
  std::array<std::byte, drv::page_size>& page(uint64_t pa) {
    auto& p = pages_[drv::gfn_of(pa)];
    return p;
  }
  std::map<drv::gfn_t, std::array<std::byte, drv::page_size>> pages_;
};

}  // namespace vmitap::testing
