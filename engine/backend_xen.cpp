#include "engine/backend_xen.hpp"

#include "drivers/xen/xen_driver.hpp"

namespace vmitap {

namespace {

void read_section(config_reader& r, const toml::table* t, config&) {
  if (t)
    r.allow_only(*t, "xen", {});
}

caf::expected<backend_instance> start_xen(const config&) {
  auto driver = xen::open_xen_driver(xen::real_xen_api());
  if (!driver)
    return std::move(driver.error());
  return backend_instance{std::move(*driver), 0, nullptr};
}

}  // namespace

backend xen_backend() {
  auto unknowable = [](const config&, const domain_selector&, auto) {
    return std::vector<std::string>{};  // the host's domains are known only when it runs
  };
  return {
    "xen",
    read_section,
    unknowable,
    unknowable,
    [](const config&) -> std::optional<std::vector<drv::domain_info>> { return std::nullopt; },
    start_xen,
    [](const config&) {
      return std::string("xen: the domains the selectors pick on this Xen host, as they start\n");
    }};
}

}  // namespace vmitap
