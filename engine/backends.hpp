#pragma once

// The hypervisor backends vmitap can run on, in one table: each row names the driver, reads
// its config section, answers what it can about domains and addresses (for `check`), starts
// the driver, and may offer a ground truth to verify a run against (the simulated hypervisor
// does). Adding a backend is a folder under drivers/ and one row here.

#include "actors/model/plan.hpp"
#include "actors/model/report.hpp"
#include "engine/config.hpp"
#include "engine/config_reader.hpp"

#include <cstdio>
#include <functional>

namespace vmitap {

/// What only a backend that knows the whole truth can do (the simulated hypervisor).
class ground_truth {
public:
  virtual ~ground_truth() = default;
  /// True once the guests' workload has run to its end: the run may stop.
  virtual bool finished() = 0;
  /// Checks every session's report against what really ran; prints the table to `out`.
  virtual bool verify(const std::vector<domain_report>& reports, std::FILE* out) = 0;
};

struct backend_instance {
  std::shared_ptr<drv::driver> driver;
  size_t reserved_cores = 0;            ///< cores the backend's own threads keep busy
  std::shared_ptr<ground_truth> truth;  ///< none: the run cannot be verified
};

struct backend {
  std::string name;  ///< `driver = "name"`, and its section [name]
  /// Reads the section (nullptr if absent) into `cfg.backend`.
  std::function<void(config_reader&, const toml::table* section, config& cfg)> read_section;
  /// Problems with a breakpoint address for the domains `select` picks (sim: beyond memory).
  std::function<std::vector<std::string>(const config&, const domain_selector&, uint64_t pa)>
    check_address;
  /// Problems with a VCPU number for the domains `select` picks.
  std::function<std::vector<std::string>(const config&, const domain_selector&, drv::vcpu_id)>
    check_vcpu;
  /// The domains the host will have (none: the backend cannot know before it runs).
  std::function<std::optional<std::vector<drv::domain_info>>(const config&)> known_domains;
  /// Starts the driver (and whatever it simulates).
  std::function<caf::expected<backend_instance>(const config&)> start;
  /// Its part of `vmitap check`'s description.
  std::function<std::string(const config&)> describe;
};

/// Every backend, in the order they are listed to users.
const std::vector<backend>& backends();
/// The row for `name`, or none.
const backend* find_backend(std::string_view name);
/// "sim", "xen": for messages.
std::string backend_names();

}  // namespace vmitap
