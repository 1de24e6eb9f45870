#include "drivers/sim/program.hpp"

#include "drivers/error.hpp"

#include <algorithm>

namespace vmitap::sim {

namespace {

// x86-like length distribution: mostly 2-7 bytes, a few long ones.
uint8_t instruction_length(rng& r) {
  static constexpr uint8_t lengths[] = {1, 2, 2, 3, 3, 3, 4, 4, 5, 5, 6, 7, 7, 8, 10, 15};
  return lengths[r.below(std::size(lengths))];
}

constexpr drv::gfn_t data_alignment = 16;  // pages

}  // namespace

caf::expected<program> program::generate(const workload_config& cfg, drv::gfn_t max_gfn) {
  if (cfg.functions == 0 || cfg.min_function_length < 2 ||
      cfg.max_function_length < cfg.min_function_length)
    return make_error(ec::invalid_argument,
                      "sim workload: need functions >= 1 and 2 <= min <= max length");
  if (cfg.module_functions >= cfg.functions)
    return make_error(ec::invalid_argument,
                      "sim workload: module_functions (" + std::to_string(cfg.module_functions) +
                        ") must be fewer than functions (" + std::to_string(cfg.functions) +
                        "): some code must stay when the module is out");
  program p;
  p.first_module_function_ = cfg.functions - cfg.module_functions;
  rng r{cfg.seed ^ 0x5eed0f5c0de5ULL};
  auto data_pages = std::max(cfg.data_pages, 1u);
  // The data pages follow the code; their addresses are drawn before the code is complete,
  // so place them where the code cannot reach: after the largest code this config can make.
  auto max_code_bytes = uint64_t(cfg.functions) * (cfg.max_function_length * 15 + 16) +
                        (cfg.module_functions > 0 ? drv::page_size : 0);  // the module's start
  auto data_base = (cfg.code_base_gfn + drv::gfn_of(max_code_bytes) + 1 + data_alignment - 1) /
                   data_alignment * data_alignment;
  uint64_t pa = drv::pa_of(cfg.code_base_gfn);
  auto data_page = [&](uint64_t k) { return drv::pa_of(data_base + k % data_pages); };
  for (uint32_t f = 0; f < cfg.functions; ++f) {
    pa = (pa + 15) & ~uint64_t{15};  // functions start 16-byte aligned
    if (f == p.first_module_function_) {
      pa = (pa + drv::page_mask) & ~drv::page_mask;  // no page holds both kinds of code
      p.first_module_instruction_ = uint32_t(p.instructions_.size());
      p.first_module_gfn_ = drv::gfn_of(pa);
    }
    auto len = cfg.min_function_length +
               uint32_t(r.below(cfg.max_function_length - cfg.min_function_length + 1));
    function fn{uint32_t(p.instructions_.size()), len, 0};
    for (uint32_t i = 0; i < len; ++i) {
      instruction in;
      in.length = instruction_length(r);
      if ((pa & drv::page_mask) + in.length > drv::page_size)
        pa = (pa | drv::page_mask) + 1;  // no instruction straddles a page
      in.pa = pa;
      pa += in.length;
      bool last = i + 1 == len;
      if (last) {
        in.kind = op::ret;
      } else if (f + 1 < cfg.functions && r.chance(cfg.call_probability)) {
        in.kind = op::call;  // only to later functions: the call graph is acyclic
        in.target = f + 1 + uint32_t(r.below(std::min<uint32_t>(8, cfg.functions - f - 1)));
      } else if (i + 2 < len && r.chance(cfg.branch_probability)) {
        in.kind = op::branch;
        in.target = fn.first + i + 2 + uint32_t(r.below(len - i - 2));
      } else if (r.chance(cfg.load_probability)) {
        in.kind = op::load;
        in.data_pa = r.chance(cfg.code_read_fraction)
                       ? drv::pa_of(cfg.code_base_gfn) + r.below(pa - drv::pa_of(cfg.code_base_gfn))
                       : data_page(r.next()) + r.below(drv::page_size / 8) * 8;
      } else if (r.chance(cfg.store_probability)) {
        in.kind = op::store;
        in.data_pa = data_page(r.next()) + r.below(drv::page_size / 8) * 8;
      }
      if (i == 0)
        fn.entry_pa = in.pa;
      p.index_by_pa_.emplace(in.pa, uint32_t(p.instructions_.size()));
      p.instructions_.push_back(in);
    }
    p.functions_.push_back(fn);
  }
  p.first_code_gfn_ = cfg.code_base_gfn;
  p.last_code_gfn_ = drv::gfn_of(pa - 1);
  if (!p.has_module())
    p.first_module_instruction_ = uint32_t(p.instructions_.size());
  p.last_data_gfn_ = data_base + data_pages - 1;
  if (p.last_data_gfn_ > max_gfn) {
    auto need_mib = (drv::pa_of(p.last_data_gfn_ + 1) + (1 << 20) - 1) >> 20;
    return make_error(ec::invalid_argument,
                      "sim workload: code and data need " + std::to_string(need_mib) +
                        " MiB of guest memory, the domain has " +
                        std::to_string(drv::pa_of(max_gfn + 1) >> 20) + " MiB");
  }
  double sum = 0;
  for (uint32_t f = 0; f < cfg.functions; ++f)
    p.root_weights_.push_back(sum += 1.0 / (f + 1));
  return p;
}

std::optional<uint32_t> program::index_of(uint64_t pa) const {
  if (auto i = index_by_pa_.find(pa); i != index_by_pa_.end())
    return i->second;
  return std::nullopt;
}

uint32_t program::pick_root_function(rng& r) const {
  double x = double(r.next() >> 11) * 0x1.0p-53 * root_weights_.back();
  auto i = std::upper_bound(root_weights_.begin(), root_weights_.end(), x);
  return uint32_t(std::min<size_t>(i - root_weights_.begin(), functions_.size() - 1));
}

std::byte program::code_byte(uint64_t pa) const {
  return std::byte((pa * 0x9e3779b1u) >> 24);
}

}  // namespace vmitap::sim
