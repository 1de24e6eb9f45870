#pragma once

// What a reload changes, computed without touching anything: which sinks open and close,
// and for every monitored domain whether it keeps running as it is, has its breakpoints
// updated in place, is detached, or is detached and attached again (new views, step mode or
// sinks). Domains the new config selects and nobody monitors are attached afterwards.

#include "engine/engine_config.hpp"

namespace vmitap {

struct reload_plan {
  std::vector<sink_config> open;   ///< new sinks, and changed ones (their new form)
  std::vector<std::string> close;  ///< sinks removed, and changed ones (their old actor)
  struct domain_action {
    enum kind_t : uint8_t { keep, update, detach, reattach } kind = keep;
    drv::domain_id id = 0;
    plan_ptr plan;       ///< update: the new plan; keep: the plan, unchanged
    std::string reason;  ///< for the log
  };
  std::vector<domain_action> domains;  ///< one per monitored domain, in the order given
};

reload_plan diff(const engine_config& before, const engine_config& after,
                 const std::vector<drv::domain_info>& monitored);

}  // namespace vmitap
