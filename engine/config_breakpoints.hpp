#pragma once

// A domain's `[[domain.breakpoint]]` tables, for load_config: each one's target (a symbol,
// a kernel virtual address or a physical address) and options (name, view, tags, captures,
// handler, rate limit, processes).

#include "engine/backends.hpp"
#include "engine/config.hpp"
#include "engine/config_reader.hpp"

namespace vmitap {

/// What reading one domain's breakpoints needs besides its tables.
struct breakpoint_reading {
  const std::vector<std::string>&
    views;                           ///< the domain's, declared first; the first is the default
  drv::calling_convention cc;        ///< how capture expressions name arguments
  const handler_registry* handlers;  ///< a breakpoint's handler must be one of these
  /// Problems with a target address for this domain (the backend's check).
  std::function<std::vector<std::string>(uint64_t pa)> check_address;
  /// The domain's kernel profile (symbol targets need one); null if it has none.
  const drv::kernel_profile* profile = nullptr;
  /// The domain names a profile that could not be read (reported once, at its key).
  bool profile_failed = false;
  /// The domain's `processes` filter: a breakpoint without its own takes it.
  std::vector<std::string> processes = {};
};

/// Reads the `[[breakpoint]]` tables of domain table `d` (at `path`), each into one
/// breakpoint_def, reporting every problem at its position.
std::vector<breakpoint_def> read_breakpoints(config_reader& r, const toml::table& d,
                                             const std::string& path,
                                             const breakpoint_reading& ctx);

}  // namespace vmitap
