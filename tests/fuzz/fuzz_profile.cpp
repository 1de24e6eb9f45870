// libFuzzer: arbitrary bytes as a kernel profile (JSON, or gzip / xz by their magic bytes).
// The reader returns a profile or a config_invalid error that names the input in valid UTF-8,
// never crashes; a profile it returns is of ISF format 6.x and keeps only fields its OS uses.

#include "drivers/error.hpp"
#include "drivers/guest/profile.hpp"
#include "tests/fuzz/fuzz_checks.hpp"

#include <algorithm>
#include <cstdlib>

using namespace vmitap;
using namespace vmitap::fuzz;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto p = drv::parse_profile({reinterpret_cast<const char*>(data), size}, "fuzz.json");
  if (!p) {
    require(code_of(p.error()) == ec::config_invalid);
    auto text = context_of(p.error());
    require(text.starts_with("fuzz.json: ") && valid_utf8(text));
    return 0;
  }
  require(p->path == "fuzz.json");
  require(p->format.starts_with("6."));
  auto used = drv::fields_used(p->os);
  for (auto& entry : p->offsets)
    require(std::any_of(used.begin(), used.end(), [&](auto& f) {
      return entry.first == std::string(f.type) + "." + std::string(f.field);
    }));
  require(p->os == drv::kernel_os::windows_kernel || !p->pdb);
  require(p->os == drv::kernel_os::linux_kernel || !p->banner);
  // Every symbol is its own nearest name.
  if (!p->symbols.empty()) {
    auto& name = p->symbols.begin()->first;
    auto near = p->nearest(name, 2);
    require(!near.empty() && near.size() <= 2 && near[0] == name);
  }
  return 0;
}
