#include "engine/profile_commands.hpp"

#include "drivers/error.hpp"
#include "drivers/guest/profile.hpp"
#include "drivers/sim/kernel.hpp"
#include "engine/backend_sim.hpp"
#include "engine/exit_codes.hpp"

#include <fnmatch.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>

namespace vmitap {

int list_symbols(const std::string& path, const std::string& glob) {
  auto profile = drv::read_profile(path);
  if (!profile) {
    std::fprintf(stderr, "%s\n", render(profile.error()).c_str());
    return exit_code::config;
  }
  std::vector<std::pair<uint64_t, const std::string*>> rows;
  for (auto& [name, address] : profile->symbols)
    if (glob.empty() || ::fnmatch(glob.c_str(), name.c_str(), 0) == 0)
      rows.emplace_back(address, &name);
  std::sort(rows.begin(), rows.end(), [](auto& a, auto& b) {
    return a.first != b.first ? a.first < b.first : *a.second < *b.second;
  });
  for (auto& [address, name] : rows)
    std::printf("%016llx %s\n", static_cast<unsigned long long>(address), name->c_str());
  std::fprintf(
    stderr, "%s: %s kernel, ISF %s, %zu of %zu symbols%s\n", path.c_str(),
    drv::to_string(profile->os), profile->format.c_str(), rows.size(), profile->symbols.size(),
    profile->os == drv::kernel_os::windows_kernel ? " (offsets from the image base)"
                                                  : " (link-time addresses: add the KASLR slide)");
  return rows.empty() && !glob.empty() ? exit_code::failed : exit_code::ok;
}

caf::error write_sim_profile(const config& cfg, const std::string& domain, const std::string& out) {
  if (cfg.driver != "sim")
    return make_error(ec::invalid_argument, cfg.path + " drives \"" + cfg.driver +
                                              "\": only simulated guests have a "
                                              "profile vmitap can write");
  const auto& sim = std::any_cast<const sim_options&>(cfg.backend);
  auto d =
    std::find_if(sim.domains.begin(), sim.domains.end(), [&](auto& x) { return x.name == domain; });
  if (d == sim.domains.end())
    return make_error(ec::invalid_argument,
                      cfg.path + " has no [[sim.domain]] named \"" + domain + "\"");
  auto json = sim::kernel_profile_json(*d);
  if (!json)
    return std::move(json.error());
  if (out == "-") {
    std::fwrite(json->data(), 1, json->size(), stdout);
    std::fputc('\n', stdout);
    return {};
  }
  // Written whole, then renamed: a reader never sees half a profile.
  auto tmp = out + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f << *json << '\n';
    f.flush();
    if (!f)
      return make_error(ec::io_failed, "write", tmp, errno);
  }
  std::error_code failed;
  std::filesystem::rename(tmp, out, failed);
  if (failed)
    return make_error(ec::io_failed, "rename", out, failed.value());
  return {};
}

}  // namespace vmitap
