// vmitap's command line.

#include "engine/demo.hpp"

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

int main(int argc, char** argv) {
  // Logs go to stderr; hits and summaries to stdout or sinks, never mixed into the log.
  spdlog::set_default_logger(spdlog::stderr_color_mt("vmitap"));
  CLI::App app{"vmitap: exact memory breakpoints for Xen guests"};
  app.set_version_flag("--version", "vmitap " VMITAP_VERSION);
  app.require_subcommand(1);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, off");

  vmitap::demo_options demo;
  auto* run = app.add_subcommand("run", "monitor domains (no config: the built-in demo)");
  run->add_option("--instructions", demo.instructions_per_vcpu,
                  "demo: instructions each simulated VCPU executes");
  uint64_t max_seconds = 60;
  run->add_option("--max-seconds", max_seconds, "demo: stop after this long at the latest");
  run->add_option("--hits", demo.hits_path, "demo: JSON-lines file for hit records");
  run->add_option("--threads", demo.worker_threads, "actor scheduler threads");
  run->add_option("--metrics", demo.metrics_listen,
                  "Prometheus exporter address (host:port, port 0: any free one; empty: none)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  spdlog::set_level(spdlog::level::from_str(log_level));
  demo.max_duration = std::chrono::seconds(max_seconds);
  if (*run)
    return vmitap::run_demo(demo);
  return 2;
}
