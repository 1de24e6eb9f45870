#pragma once

// Breakpoints at scale: arming N breakpoints over M domains (time, driver calls, heap per
// breakpoint) and tearing them down again, through the whole engine.

#include <cstdint>

namespace vmitap::bench {

struct scale_result {
  double arm_seconds = 0;       ///< start → every domain attached with every breakpoint armed
  double teardown_seconds = 0;  ///< stop → every page restored, every domain detached
  uint64_t get_calls = 0;       ///< driver calls while arming (batched reads)
  uint64_t set_calls = 0;       ///< (batched writes)
  uint64_t view_calls = 0;
  double heap_bytes = 0;           ///< heap the monitored domains hold, breakpoints armed
  double heap_per_breakpoint = 0;  ///< heap_bytes ÷ breakpoints, the domains' own included
  bool exact = false;              ///< every page restored, nothing paused
};

/// `breakpoints` in each of `domains` domains of `vcpus` VCPUs, four per page. Guest memory
/// is sized for max(`breakpoints`, `sized_for`): a run without breakpoints can have the
/// same domains as a run with them.
scale_result run_scale(uint32_t domains, uint32_t breakpoints, uint32_t vcpus = 1,
                       uint32_t sized_for = 0);

}  // namespace vmitap::bench
