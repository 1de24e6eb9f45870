// vmitap's command line: run a config as a service would, run the built-in demo, check a
// config, list the domains a driver sees, list a profile's symbols, write a sim guest's profile.

#include "drivers/error.hpp"
#include "engine/backend_sim.hpp"
#include "engine/backends.hpp"
#include "engine/demo_config.hpp"
#include "engine/engine.hpp"
#include "engine/exit_codes.hpp"
#include "engine/listen_address.hpp"
#include "engine/logging.hpp"
#include "engine/profile_commands.hpp"
#include "engine/run_loop.hpp"
#include "engine/signals.hpp"

#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>
#include <caf/config.hpp>

#include <unistd.h>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>

namespace {

using namespace vmitap;

int config_error(const caf::error& err) {
  std::fprintf(stderr, "%s\n", context_of(err).c_str());
  return exit_code::config;
}

/// --max-seconds, fractions kept (to the millisecond).
std::optional<std::chrono::milliseconds> limit(double seconds) {
  if (!(seconds > 0))
    return std::nullopt;
  return std::chrono::milliseconds(std::llround(seconds * 1000));
}

/// --metrics ADDRESS on the command line beats [metrics] listen in the file.
bool override_metrics(config& cfg, const std::string& listen) {
  if (listen == "-")
    return true;
  if (!listen.empty())
    if (auto parsed = parse_listen(listen); !parsed) {
      std::fprintf(stderr, "--metrics %s\n", context_of(parsed.error()).c_str());
      return false;
    }
  cfg.engine.metrics_listen = listen;
  return true;
}

struct demo_flags {
  uint64_t instructions = 3'000'000;
  std::string hits = "vmitap-hits.jsonl";
  uint64_t latency_us = 0;
};

/// The demo: the sim backend with the built-in config (examples/demo.toml), adjusted by the
/// demo's flags. Its domains arm symbols from their guests' profiles, which examples/
/// has beside demo.toml: the demo writes them afresh (as `vmitap sim-profile` does) into a
/// directory of its own, reads the config against it, and removes it.
caf::expected<config> demo_config(const demo_flags& flags) {
  constexpr auto demo_path = "(built-in demo, examples/demo.toml)";
  auto host = parse_host_config(builtin_demo_toml, demo_path);
  if (!host)
    return host;
  auto pattern = (std::filesystem::temp_directory_path() / "vmitap-demo-XXXXXX").string();
  if (!::mkdtemp(pattern.data()))
    return make_error(ec::io_failed, "mkdtemp", pattern, errno);
  std::filesystem::path dir = pattern;
  std::filesystem::create_directory(dir / "profiles");
  caf::expected<config> cfg = make_error(ec::io_failed);
  caf::error written;
  for (auto& d : std::any_cast<sim_options&>(host->backend).domains)
    if (!written)
      written =
        write_sim_profile(*host, d.name, (dir / "profiles" / (d.name + ".isf.json")).string());
  if (written)
    cfg = std::move(written);
  else
    cfg = parse_config(builtin_demo_toml, demo_path, nullptr, dir.string());
  std::error_code ignored;  // a temporary directory left behind is no reason to fail the demo
  std::filesystem::remove_all(dir, ignored);
  if (!cfg)
    return cfg;
  auto& sim = std::any_cast<sim_options&>(cfg->backend);
  sim.exit_latency = std::chrono::microseconds(flags.latency_us);
  for (auto& d : sim.domains)
    d.instructions_per_vcpu = flags.instructions;
  auto& sinks = cfg->engine.sinks;
  for (auto& s : sinks)
    if (s.name == "hits")
      s.path = flags.hits;
  if (flags.hits.empty()) {  // no hit file: no sink
    std::erase_if(sinks, [](auto& s) { return s.name == "hits"; });
    for (auto& d : cfg->engine.domains)
      std::erase(d.sinks, "hits");
  }
  return cfg;
}

/// `driver`: the --driver flag, empty if not given (then the config's, or the demo's sim).
int list_domains(const std::string& driver, const std::string& path) {
  auto cfg = path.empty() ? demo_config({}) : load_config(path);
  if (!cfg)
    return config_error(cfg.error());
  if (!path.empty() && !driver.empty() && driver != cfg->driver) {
    std::fprintf(stderr, "--driver %s, but %s says driver = \"%s\": give one of them\n",
                 driver.c_str(), path.c_str(), cfg->driver.c_str());
    return exit_code::config;
  }
  if (!driver.empty() && driver != cfg->driver) {
    cfg->driver = driver;
    cfg->backend.reset();
  }
  auto instance = find_backend(cfg->driver)->start(*cfg);
  if (!instance) {
    std::fprintf(stderr, "%s\n", context_of(instance.error()).c_str());
    return exit_code::unavailable;
  }
  auto domains = instance->driver->list_domains();
  if (!domains) {
    std::fprintf(stderr, "%s\n", context_of(domains.error()).c_str());
    return exit_code::failed;
  }
  std::printf("%-6s %-20s %6s %10s %s\n", "id", "name", "vcpus", "memory", "state");
  for (auto& d : *domains)
    std::printf("%-6u %-20s %6u %6llu MiB %s\n", d.id, d.name.c_str(), d.vcpus,
                (unsigned long long)((d.max_gfn + 1) * drv::page_size >> 20), to_string(d.state));
  return exit_code::ok;
}

}  // namespace

int main(int argc, char** argv) {
  // First of all: no signal may end vmitap before it can detach (see engine/signals.hpp).
  block_signals();
  // Logs go to stderr; stdout belongs to a stdout sink's hit records.
  setup_logging();

  CLI::App app{"vmitap: exact memory breakpoints for Xen guests, with metrics"};
  auto version = "vmitap " + this_build().version + " (" + this_build().revision + ", " +
                 std::string(*VMITAP_BUILD_TYPE ? VMITAP_BUILD_TYPE : "no build type") +
                 ")\nbuilt with CAF " + std::to_string(CAF_MAJOR_VERSION) + "." +
                 std::to_string(CAF_MINOR_VERSION) + "." + std::to_string(CAF_PATCH_VERSION) +
                 ", libxenctrl " + VMITAP_XENCTRL_VERSION;
  app.set_version_flag("--version", version);
  app.require_subcommand(1);
  // `vmitap help` and `vmitap version`, as people type them.
  auto* help_cmd = app.add_subcommand("help", "this help (as --help)");
  auto* version_cmd = app.add_subcommand("version", "the version and what it was built with");
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, off")
    ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}))
    ->capture_default_str();

  std::string run_config = defaults::config_path;
  double max_seconds = 0;
  std::string metrics = "-";
  auto* run = app.add_subcommand("run", "monitor the domains a config selects, until stopped");
  run->fallthrough();
  run->add_option("--config", run_config, "the TOML config (see examples/)")->capture_default_str();
  run->add_option("--max-seconds", max_seconds, "stop after this long (0: run until a signal)")
    ->check(CLI::NonNegativeNumber)
    ->capture_default_str();
  run->add_option("--metrics", metrics,
                  "Prometheus exporter address, overriding [metrics] listen (\"\": off)");

  demo_flags demo;
  double demo_seconds = 0;
  std::string demo_metrics = "-";
  auto* demo_cmd = app.add_subcommand(
    "demo", "the built-in demo: simulated domains, verified against ground truth at the end");
  demo_cmd->fallthrough();
  demo_cmd
    ->add_option("--instructions", demo.instructions,
                 "instructions each simulated VCPU executes (0: until stopped)")
    ->capture_default_str();
  demo_cmd->add_option("--max-seconds", demo_seconds, "stop after this long (0: when done)")
    ->check(CLI::NonNegativeNumber)
    ->capture_default_str();
  demo_cmd->add_option("--hits", demo.hits, "JSON-lines file for hit records (\"\": none)")
    ->capture_default_str();
  demo_cmd
    ->add_option("--latency-us", demo.latency_us,
                 "VM-exit latency model: an answered VCPU resumes this much later")
    ->capture_default_str();
  demo_cmd->add_option("--metrics", demo_metrics,
                       "Prometheus exporter address (default: the demo config's, " +
                         std::string(defaults::metrics_listen) + "; \"\": off)");

  std::string check_path;
  auto* check = app.add_subcommand("check", "validate a config and print the topology it builds");
  check->fallthrough();
  check->add_option("--config", check_path, "the TOML config")->required();

  std::string driver;  // none given: the config's driver, or the demo's (sim)
  std::string domains_config;
  auto* domains = app.add_subcommand("domains", "list the domains a driver sees");
  domains->fallthrough();
  std::vector<std::string> drivers;
  for (auto& b : backends())
    drivers.push_back(b.name);
  domains
    ->add_option("--driver", driver,
                 "the backend: " + backend_names() + " (default: the config's, else sim)")
    ->check(CLI::IsMember(drivers));
  domains->add_option("--config", domains_config,
                      "the config whose driver to use (sim: whose guests to create)");

  std::string symbols_profile, symbols_glob;
  auto* symbols = app.add_subcommand("symbols", "list a kernel profile's symbols and addresses");
  symbols->fallthrough();
  symbols->add_option("--profile", symbols_profile, "a Volatility 3 ISF file (.json, .gz, .xz)")
    ->required();
  symbols->add_option("glob", symbols_glob, "only names matching this glob (\"Nt*File\")");

  std::string sim_profile_config, sim_profile_domain, sim_profile_out = "-";
  auto* sim_profile = app.add_subcommand(
    "sim-profile", "write the kernel profile (ISF) a simulated guest was built with");
  sim_profile->fallthrough();
  sim_profile->add_option("--config", sim_profile_config, "the config whose [sim] has the guest")
    ->required();
  sim_profile->add_option("--domain", sim_profile_domain, "the [[sim.domain]]'s name")->required();
  sim_profile->add_option("--out", sim_profile_out, "the file (\"-\": stdout)")
    ->capture_default_str();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? exit_code::ok : exit_code::config;
  }
  if (*help_cmd) {
    std::printf("%s", app.get_formatter()->make_help(&app, "", CLI::AppFormatMode::Normal).c_str());
    return exit_code::ok;
  }
  if (*version_cmd) {
    std::printf("%s\n", version.c_str());
    return exit_code::ok;
  }
  spdlog::set_level(spdlog::level::from_str(log_level));
  bool terminal = isatty(STDERR_FILENO) == 1;

  if (*check || *domains || *symbols || *sim_profile)
    unblock_signals();  // short commands: signals act as usual
  if (*symbols)
    return list_symbols(symbols_profile, symbols_glob);
  if (*sim_profile) {
    auto host = load_host_config(sim_profile_config);
    if (!host)
      return config_error(host.error());
    if (auto err = write_sim_profile(*host, sim_profile_domain, sim_profile_out)) {
      std::fprintf(stderr, "%s\n", render(err).c_str());
      return exit_code::failed;
    }
    return exit_code::ok;
  }
  if (*check) {
    auto cfg = load_config(check_path);
    if (!cfg)
      return config_error(cfg.error());
    if (!cfg->warnings.empty())
      std::fprintf(stderr, "%s\n", cfg->warnings.c_str());
    std::printf("%s", describe(*cfg).c_str());
    return exit_code::ok;
  }
  if (*domains)
    return list_domains(driver, domains_config);
  if (*demo_cmd) {
    auto cfg = demo_config(demo);
    if (!cfg)
      return config_error(cfg.error());
    if (!override_metrics(*cfg, demo_metrics))
      return exit_code::config;
    auto& sim = std::any_cast<sim_options&>(cfg->backend);
    auto title = "vmitap demo: " + std::to_string(sim.domains.size()) + " simulated domains, " +
                 std::to_string(demo.instructions) + " instructions per VCPU";
    return vmitap::run(*cfg, {limit(demo_seconds), {}, title, terminal, {}});
  }
  auto cfg = load_config(run_config);
  if (!cfg)
    return config_error(cfg.error());
  if (!override_metrics(*cfg, metrics))
    return exit_code::config;
  auto reread = [run_config, metrics]() -> caf::expected<config> {
    auto next = load_config(run_config);
    if (next && metrics != "-")
      next->engine.metrics_listen = metrics;
    return next;
  };
  return vmitap::run(*cfg, {limit(max_seconds), reread, "vmitap: " + run_config, terminal, {}});
}
