// vmitap's command line: run (a config, or the built-in demo), check a config, list domains.

#include "drivers/sim/sim_driver.hpp"
#include "engine/config.hpp"
#include "engine/demo.hpp"
#include "engine/error.hpp"

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

namespace {

using namespace vmitap;

constexpr int exit_config_error = 2;

/// The simulated host a config describes.
std::shared_ptr<sim::hypervisor> make_sim(const config& cfg) {
  auto hv = std::make_shared<sim::hypervisor>(
    sim::hypervisor_config{.threaded = true, .slice_instructions = 512,
                           .exit_latency = cfg.sim.exit_latency});
  for (auto& d : cfg.sim.domains)
    hv->create_domain(d);
  return hv;
}

caf::error xen_unavailable() {
  return make_error(ec::invalid_argument,
                    "driver xen: this build has no Xen backend yet; use driver \"sim\"");
}

int run_config(const std::string& path, std::chrono::seconds max_duration) {
  auto cfg = load_config(path);
  if (!cfg) {
    std::fprintf(stderr, "%s\n", context_of(cfg.error()).c_str());
    return exit_config_error;
  }
  if (cfg->driver == "xen") {
    spdlog::error("{}", render(xen_unavailable()));
    return exit_config_error;
  }
  auto reread = [path]() -> caf::expected<engine_config> {
    auto next = load_config(path);
    if (!next)
      return std::move(next.error());
    return next->engine;  // [engine], [metrics] and [sim] take effect at start only
  };
  return run_on_sim(make_sim(*cfg), cfg->engine, max_duration,
                    "vmitap: " + std::to_string(cfg->sim.domains.size())
                      + " simulated domains from " + path,
                    reread);
}

int check_config(const std::string& path) {
  auto cfg = load_config(path);
  if (!cfg) {
    std::fprintf(stderr, "%s\n", context_of(cfg.error()).c_str());
    return exit_config_error;
  }
  std::printf("%s", describe(*cfg).c_str());
  return 0;
}

int list_domains(const std::string& driver, const std::string& config_path) {
  if (driver == "xen") {
    std::fprintf(stderr, "%s\n", render(xen_unavailable()).c_str());
    return 1;
  }
  std::shared_ptr<sim::hypervisor> hv;
  if (config_path.empty()) {
    hv = std::make_shared<sim::hypervisor>(sim::hypervisor_config{.threaded = false});
    demo_topology(*hv, demo_options{});
  } else {
    auto cfg = load_config(config_path);
    if (!cfg) {
      std::fprintf(stderr, "%s\n", context_of(cfg.error()).c_str());
      return exit_config_error;
    }
    hv = make_sim(*cfg);
  }
  sim::sim_driver drv{hv};
  auto domains = drv.list_domains();
  if (!domains) {
    std::fprintf(stderr, "%s\n", render(domains.error()).c_str());
    return 1;
  }
  std::printf("%-6s %-16s %6s %10s %s\n", "id", "name", "vcpus", "memory", "state");
  for (auto& d : *domains)
    std::printf("%-6u %-16s %6u %7llu MiB %s\n", d.id, d.name.c_str(), d.vcpus,
                (unsigned long long) ((d.max_gfn + 1) * drv::page_size >> 20), to_string(d.state));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Logs go to stderr; hits and summaries to stdout or sinks, never mixed into the log.
  spdlog::set_default_logger(spdlog::stderr_color_mt("vmitap"));
  CLI::App app{"vmitap: exact memory breakpoints for Xen guests"};
  app.set_version_flag("--version", "vmitap " VMITAP_VERSION);
  app.require_subcommand(1);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, off")
    ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));

  vmitap::demo_options demo;
  std::string config_path;
  uint64_t max_seconds = 3600;
  auto* run = app.add_subcommand("run", "monitor domains (no --config: the built-in demo)");
  run->add_option("--config", config_path, "the TOML config (examples/*.toml)");
  run->add_option("--instructions", demo.instructions_per_vcpu,
                  "demo: instructions each simulated VCPU executes (0: until stopped)");
  run->add_option("--max-seconds", max_seconds, "stop after this long at the latest");
  run->add_option("--hits", demo.hits_path, "demo: JSON-lines file for hit records");
  run->add_option("--threads", demo.worker_threads, "demo: actor scheduler threads");
  uint64_t latency_us = 0;
  run->add_option("--latency-us", latency_us,
                  "demo: VM-exit latency model: an answered VCPU resumes this much later");
  run->add_option("--metrics", demo.metrics_listen,
                  "demo: Prometheus exporter address (host:port, port 0: any; empty: none)");

  std::string check_path;
  auto* check = app.add_subcommand("check", "validate a config and print the topology it builds");
  check->add_option("--config", check_path, "the TOML config")->required();

  std::string driver = "sim";
  std::string domains_config;
  auto* domains = app.add_subcommand("domains", "list the domains a driver sees");
  domains->add_option("--driver", driver, "sim or xen")->check(CLI::IsMember({"sim", "xen"}));
  domains->add_option("--config", domains_config, "sim: the config whose guests to create");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : exit_config_error;
  }
  spdlog::set_level(spdlog::level::from_str(log_level));
  demo.max_duration = std::chrono::seconds(max_seconds);
  demo.exit_latency = std::chrono::microseconds(latency_us);
  if (*check)
    return check_config(check_path);
  if (*domains)
    return list_domains(driver, domains_config);
  if (!config_path.empty())
    return run_config(config_path, std::chrono::seconds(max_seconds));
  return vmitap::run_demo(demo);
}
