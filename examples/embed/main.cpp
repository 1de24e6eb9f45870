// A program that embeds vmitap as a library with a hit handler of its own, the way a malware
// sandbox makes an API fail for the sample it watches: at a function's first instruction the
// handler returns to the caller at once with rax = -1, so the function never runs, and the
// sample sees the failure. Calls without a caller (a thread's outermost function) run as usual.
//
//   vmitap-embed-example CONFIG   e.g. examples/embed/embed.toml (the simulated hypervisor)
//
// Everything else is vmitap's: the config (a breakpoint names the handler with `handler =`),
// signals, reload, sinks, metrics and, on the simulated hypervisor, the check of every hit
// against its ground truth. The exit code is vmitap's (0: every hit exact).

#include "engine/config.hpp"
#include "engine/exit_codes.hpp"
#include "engine/logging.hpp"
#include "engine/run_loop.hpp"
#include "engine/signals.hpp"

#include "drivers/error.hpp"

#include <atomic>
#include <cstdio>

namespace {

std::atomic<uint64_t> failed_calls{0}, let_through{0};

/// Needs the breakpoint to capture the return address: `{ name = "ret", value = "[rsp]" }`.
vmitap::handler_decision fail_call(const vmitap::handler_hit& hit) {
  auto ret = hit.value("ret");
  if (!ret || *ret == 0) {  // unreadable, or no caller to return to
    ++let_through;
    return vmitap::handler_decision::resume();
  }
  ++failed_calls;
  return vmitap::handler_decision::return_from_call(hit, *ret, ~uint64_t{0});
}

}  // namespace

int main(int argc, char** argv) {
  vmitap::block_signals();  // before any thread: a stop must find vmitap ready to detach
  vmitap::setup_logging();  // stderr, or the journal under systemd; stdout is for hit records
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CONFIG\n", argv[0]);
    return vmitap::exit_code::config;
  }
  auto handlers = std::make_shared<vmitap::handler_registry>();
  handlers->add("fail_call", fail_call);

  std::string path = argv[1];
  auto cfg = vmitap::load_config(path, handlers.get());
  if (!cfg) {
    std::fprintf(stderr, "%s\n", vmitap::context_of(cfg.error()).c_str());
    return vmitap::exit_code::config;
  }
  vmitap::run_options opts;
  opts.title = "vmitap-embed-example: " + path;
  opts.handlers = handlers;
  opts.reread = [path, handlers] { return vmitap::load_config(path, handlers.get()); };
  auto code = vmitap::run(*cfg, opts);
  std::printf("fail_call: %llu calls made to fail, %llu let through\n",
              (unsigned long long)failed_calls.load(), (unsigned long long)let_through.load());
  return code;
}
