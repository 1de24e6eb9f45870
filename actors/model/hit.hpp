#pragma once

// A breakpoint hit: where it happened and what its captures read (hit_site, what sinks and
// handlers are both told), and the record a sink writes (hit_record).

#include "actors/model/breakpoint.hpp"
#include "drivers/guest/kernel.hpp"

#include <map>
#include <string_view>

namespace vmitap {

/// Who a hit record is about: fixed for a session, shared by all its records.
struct domain_identity {
  drv::domain_id id = 0;
  std::string name;
  std::map<drv::view_id, std::string> view_names;
};

struct hit_site {
  std::shared_ptr<const domain_identity> domain;
  drv::vcpu_id vcpu = 0;
  drv::view_id view = 0;
  drv::gfn_t gfn = 0;
  uint64_t offset = 0;
  uint64_t gla = 0;
  breakpoint_ptr bp;
  std::vector<capture_value> captures;  ///< one per `bp->captures()` entry, in order
  /// Who ran it, read through the kernel's structures while the VCPU was paused; none if the
  /// domain has no profile or it could not be read.
  std::optional<drv::process_info> process;

  /// The capture named `name` (null if the breakpoint has none by that name).
  const capture_value* capture(std::string_view name) const;
  /// A `value` capture as a number; nothing if it is missing or could not be read.
  std::optional<uint64_t> value(std::string_view name) const;
};

struct hit_record : hit_site {
  uint64_t rip = 0;
  uint64_t cr3 = 0;
  std::chrono::steady_clock::time_point at;
  std::chrono::system_clock::time_point wall;
  uint64_t suppressions = 0;  ///< with a rate limit: times it was disarmed before this hit
  uint64_t seq = 0;           ///< its number at its sink, given when offered (sink_handle)
};

}  // namespace vmitap
