// libFuzzer: any bytes as a config file. parse_config must never crash, hang or throw; a
// rejected file's every error starts with its position; an accepted one describes itself.

#include "drivers/error.hpp"
#include "engine/config.hpp"

#include <cstdlib>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  auto cfg = vmitap::parse_config(text, "fuzz.toml");
  if (cfg) {
    if (vmitap::describe(*cfg).empty())
      std::abort();
  } else if (vmitap::context_of(cfg.error()).rfind("fuzz.toml:", 0) != 0) {
    std::abort();  // an error without its position
  }
  return 0;
}
