#pragma once

// The commands around kernel profiles: list a profile's symbols, and write the profile a
// simulated guest was built with (what a real guest's distribution ships as an ISF).

#include "engine/config.hpp"

#include <string>

namespace vmitap {

/// `vmitap symbols --profile F [GLOB]`: "address name" per symbol matching GLOB (all if
/// empty), by address. Returns the exit code.
int list_symbols(const std::string& profile, const std::string& glob);

/// The ISF of simulated guest `domain` of the host config `cfg` (its driver must be sim),
/// written to `out` by atomic rename ("-": stdout).
caf::error write_sim_profile(const config& cfg, const std::string& domain, const std::string& out);

}  // namespace vmitap
