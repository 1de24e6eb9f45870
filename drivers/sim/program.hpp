#pragma once

// The simulated guest's code: functions of variable-length instructions laid out across code
// pages, with calls, returns, forward branches and data loads/stores. Generated from a seed, so
// the same seed gives the same guest.

#include "drivers/sim/rng.hpp"
#include "drivers/vm_event.hpp"

#include <caf/expected.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

namespace vmitap::sim {

struct workload_config {
  uint64_t seed = 1;
  uint32_t functions = 48;
  uint32_t min_function_length = 6;  ///< instructions, the final `ret` included
  uint32_t max_function_length = 40;
  double call_probability = 0.06;    ///< per instruction
  double branch_probability = 0.05;  ///< a conditional forward branch
  double load_probability = 0.15;
  double store_probability = 0.08;
  double code_read_fraction = 0.25;  ///< loads that read constants from code pages
  drv::gfn_t code_base_gfn = 0x100;  ///< code starts at 1 MiB
  uint32_t data_pages = 16;          ///< follow the code, 64 KiB aligned
  /// The last this many functions form a loadable module: its code starts on a page of its
  /// own, and it is paged in and out while the guest runs (domain_config::module_interval).
  /// 0: no module. Fewer than `functions`.
  uint32_t module_functions = 0;
};

enum class op : uint8_t { plain, call, ret, branch, load, store };

struct instruction {
  uint64_t pa = 0;
  uint8_t length = 1;
  op kind = op::plain;
  uint32_t target = 0;   ///< call: callee function; branch: instruction index jumped to
  uint64_t data_pa = 0;  ///< load/store: the data address
};

struct function {
  uint32_t first = 0;  ///< index of its first instruction
  uint32_t count = 0;
  uint64_t entry_pa = 0;
};

/// Where the kernel's map of RAM starts before its KASLR slide (kernel.hpp): its link-time
/// address, which an ISF names.
inline constexpr uint64_t kernel_base = 0xffffffff80000000ULL;

class program {
public:
  /// Lays out `cfg.functions` functions from `cfg.code_base_gfn`, then the data pages. Fails
  /// (ec::invalid_argument, saying how much memory it needs) if they do not fit below
  /// `max_gfn`. Instructions never straddle a page boundary.
  static caf::expected<program> generate(const workload_config& cfg, drv::gfn_t max_gfn);

  const instruction& at(uint32_t index) const { return instructions_[index]; }
  size_t size() const { return instructions_.size(); }
  std::span<const function> functions() const { return functions_; }
  std::optional<uint32_t> index_of(uint64_t pa) const;

  /// Picks the next top-level function; low indices are hotter (1/(rank+1) weights).
  uint32_t pick_root_function(rng& r) const;
  /// The first instruction of `pick_root_function` (the same draw).
  uint32_t pick_root(rng& r) const { return functions_[pick_root_function(r)].first; }

  drv::gfn_t first_code_gfn() const { return first_code_gfn_; }
  drv::gfn_t last_code_gfn() const { return last_code_gfn_; }
  drv::gfn_t last_data_gfn() const { return last_data_gfn_; }
  bool is_code(drv::gfn_t gfn) const { return gfn >= first_code_gfn_ && gfn <= last_code_gfn_; }

  // The loadable module: the last functions, from a page boundary to the end of the code, so
  // its pages hold its code and nothing else. Without one, the first indices are one past
  // the last and no gfn is the module's.
  bool has_module() const { return first_module_function_ < functions_.size(); }
  uint32_t first_module_function() const { return first_module_function_; }
  uint32_t first_module_instruction() const { return first_module_instruction_; }
  bool is_module_function(uint32_t function) const { return function >= first_module_function_; }
  bool in_module(uint32_t instruction) const { return instruction >= first_module_instruction_; }
  drv::gfn_t first_module_gfn() const { return first_module_gfn_; }
  drv::gfn_t last_module_gfn() const { return last_code_gfn_; }
  bool is_module_gfn(drv::gfn_t gfn) const {
    return has_module() && gfn >= first_module_gfn_ && gfn <= last_code_gfn_;
  }

  /// The byte a memory read at `pa` sees on a code page (opcode-like filler, deterministic).
  std::byte code_byte(uint64_t pa) const;

private:
  std::vector<instruction> instructions_;
  std::vector<function> functions_;
  std::vector<double> root_weights_;  ///< cumulative
  std::unordered_map<uint64_t, uint32_t> index_by_pa_;
  drv::gfn_t first_code_gfn_ = 0;
  drv::gfn_t last_code_gfn_ = 0;
  drv::gfn_t last_data_gfn_ = 0;
  uint32_t first_module_function_ = 0;
  uint32_t first_module_instruction_ = 0;
  drv::gfn_t first_module_gfn_ = 0;
};

}  // namespace vmitap::sim
