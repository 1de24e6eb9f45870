#pragma once

// A domain's `[[domain.breakpoint]]` tables, for load_config: each one's address or symbol,
// view, tags, captures, handler and rate limit, with every problem reported at its position.

#include "engine/backends.hpp"
#include "engine/config.hpp"
#include "engine/config_reader.hpp"

namespace vmitap {

/// Reads the breakpoints of domain table `d` (at `path`) into `plan`. `cc` compiles capture
/// expressions; a handler must be in `handlers`.
void read_breakpoints(config_reader& r, const backend& be, const toml::table& d,
                      const std::string& path, config& cfg, engine_config::domain_entry& e,
                      domain_plan& plan, drv::calling_convention cc,
                      const handler_registry* handlers);

}  // namespace vmitap
