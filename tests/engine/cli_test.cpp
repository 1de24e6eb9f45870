// vmitap as a user runs it: the demo, `run` with a config, and signals at any moment. Every
// catchable terminating signal detaches first; SIGHUP reloads; SIGUSR1 reopens.

#include "tests/support/process.hpp"
#include "tests/support/temp_files.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

using namespace vmitap::testing;
using namespace std::chrono_literals;

namespace {

command_result run_vmitap(std::vector<std::string> args,
                          std::function<void(pid_t, const output_fn&)> during = {}) {
  return run_command(VMITAP_BINARY, std::move(args), std::move(during));
}

const std::string run_base = R"(
[metrics]
listen = ""

[[sim.domain]]
name = "g"
vcpus = 2
memory_mib = 16
instructions = 0

[[domain]]
name = "g"

[[domain.breakpoint]]
name = "a"
address = 0x100000
)";

}  // namespace

TEST(cli, the_demo_runs_to_its_end_and_verifies_every_hit) {
  auto r =
    run_vmitap({"demo", "--instructions", "30000", "--hits", "", "--metrics", "127.0.0.1:0"});
  EXPECT_EQ(r.rc, 0) << r.all();
  EXPECT_NE(r.err.find("verified:"), std::string::npos) << r.all();
  EXPECT_TRUE(r.out.empty()) << "stdout belongs to a stdout sink: " << r.out;
  // The summary lists domains in a stable order: by name.
  auto row = [&](const char* name) { return r.err.find(std::string("\n") + name + " "); };
  EXPECT_LT(row("build-1"), row("db-1")) << r.err;
  EXPECT_LT(row("db-1"), row("web-1")) << r.err;
  EXPECT_LT(row("web-1"), row("web-2")) << r.err;
  EXPECT_NE(row("web-2"), std::string::npos) << r.err;
}

TEST(cli, sigterm_during_a_flood_detaches_and_exits_clean) {
  auto r = run_vmitap({"demo", "--instructions", "0", "--hits", "", "--metrics", "127.0.0.1:0"},
                      [](pid_t pid, const output_fn& out) {
                        ASSERT_TRUE(wait_for_output(out, "attached"));
                        std::this_thread::sleep_for(500ms);
                        kill(pid, SIGTERM);
                      });
  EXPECT_EQ(r.rc, 0) << r.all();
  EXPECT_NE(r.err.find("stopped by SIGTERM"), std::string::npos) << r.all();
  EXPECT_NE(r.err.find("verified:"), std::string::npos) << r.all();
}

TEST(cli, every_terminating_signal_detaches_first_and_sighup_usr1_usr2_do_not_stop) {
  for (int sig : {SIGINT, SIGQUIT, SIGALRM, SIGPROF, SIGRTMIN + 3}) {
    auto r = run_vmitap({"demo", "--instructions", "0", "--hits", "", "--metrics", ""},
                        [sig](pid_t pid, const output_fn& out) {
                          ASSERT_TRUE(wait_for_output(out, "attached"));
                          for (int keep : {SIGHUP, SIGUSR1, SIGUSR2})
                            kill(pid, keep);
                          std::this_thread::sleep_for(200ms);
                          kill(pid, sig);
                        });
    EXPECT_EQ(r.rc, 0) << "signal " << sig << ":\n" << r.all();
    EXPECT_NE(r.err.find("stopped by"), std::string::npos) << r.all();
    EXPECT_NE(r.err.find("verified:"), std::string::npos) << r.all();
    EXPECT_NE(r.err.find("no config file to reload"), std::string::npos) << r.all();
  }
}

// Regression (issue 13): a SIGTERM in the first milliseconds killed vmitap with domains
// attached. A signal pending when main() starts, or arriving while domains attach, is acted on.
TEST(cli, a_sigterm_pending_at_start_or_during_attach_detaches_and_exits_clean) {
  auto pending =
    run_command(VMITAP_BINARY, {"demo", "--instructions", "0", "--hits", "", "--metrics", ""}, {},
                {}, {SIGTERM});
  EXPECT_EQ(pending.rc, 0) << pending.all();
  EXPECT_NE(pending.err.find("stopped by SIGTERM"), std::string::npos) << pending.all();
  EXPECT_NE(pending.err.find("verified:"), std::string::npos) << pending.all();
  for (int delay_us : {0, 300, 3000}) {
    auto r = run_vmitap({"demo", "--instructions", "0", "--hits", "", "--metrics", ""},
                        [delay_us](pid_t pid, const output_fn& out) {
                          ASSERT_TRUE(wait_for_output(out, "vmitap demo:"));  // attaching now
                          std::this_thread::sleep_for(std::chrono::microseconds(delay_us));
                          kill(pid, SIGTERM);
                        });
    EXPECT_EQ(r.rc, 0) << "after " << delay_us << " us:\n" << r.all();
    EXPECT_NE(r.err.find("stopped by SIGTERM"), std::string::npos) << r.all();
    EXPECT_NE(r.err.find("verified:"), std::string::npos) << r.all();
  }
}

TEST(cli, sighup_with_a_bad_file_keeps_the_engine_running_unchanged) {
  auto path = write_temp_file("reload-bad.toml", run_base);
  auto r = run_vmitap({"run", "--config", path}, [&](pid_t pid, const output_fn& out) {
    ASSERT_TRUE(wait_for_output(out, "attached"));
    std::ofstream(path) << run_base << "[[domain.breakpoint]]\nname = \"a\"\naddress = 0x100004\n";
    kill(pid, SIGHUP);
    ASSERT_TRUE(wait_for_output(out, "reload rejected"));
    kill(pid, SIGTERM);
  });
  EXPECT_EQ(r.rc, 0) << r.all();
  EXPECT_NE(r.err.find("reload rejected, the running configuration stays"), std::string::npos)
    << r.all();
  EXPECT_NE(r.err.find(path + ":"), std::string::npos) << "with the position";
}

TEST(cli, sighup_applies_a_changed_config_while_the_guests_run) {
  auto path = write_temp_file("reload-good.toml", run_base);
  auto r = run_vmitap({"run", "--config", path, "--log-level", "debug"}, [&](pid_t pid,
                                                                             const output_fn& out) {
    ASSERT_TRUE(wait_for_output(out, "attached"));
    std::ofstream(path) << run_base << "[[domain.breakpoint]]\nname = \"b\"\naddress = 0x100060\n";
    kill(pid, SIGHUP);
    ASSERT_TRUE(wait_for_output(out, "reload applied"));
    kill(pid, SIGTERM);
  });
  EXPECT_EQ(r.rc, 0) << r.all();
  EXPECT_NE(r.err.find("reload: domain g: breakpoints removed: none; added: b"), std::string::npos)
    << r.all();
  EXPECT_NE(r.err.find("breakpoints armed as asked"), std::string::npos) << "debug says more";
  EXPECT_NE(r.err.find("attach: session open, domain paused"), std::string::npos) << r.all();
  EXPECT_NE(r.err.find("page(s) changed in one call"), std::string::npos) << r.all();
}

// Regression (issue 20): a reload did not say which breakpoints it removed, SIGUSR2 showed no
// breakpoint, and the summary forgot the ones a reload removed, with their hits.
TEST(cli, a_reload_names_what_it_changed_and_status_and_summary_keep_every_breakpoint) {
  auto path = write_temp_file("reload-names.toml", run_base);
  auto r = run_vmitap({"run", "--config", path}, [&](pid_t pid, const output_fn& out) {
    ASSERT_TRUE(wait_for_output(out, "attached"));
    auto next = run_base;
    next.replace(next.find("name = \"a\""), 10, "name = \"b\"");
    std::ofstream(path) << next;
    kill(pid, SIGHUP);
    ASSERT_TRUE(wait_for_output(out, "reload applied"));
    kill(pid, SIGUSR2);
    ASSERT_TRUE(wait_for_output(out, "status: domain g (1)"));
    kill(pid, SIGTERM);
  });
  EXPECT_EQ(r.rc, 0) << r.all();
  EXPECT_NE(r.err.find("reload: domain g: breakpoints removed: a; added: b"), std::string::npos)
    << r.all();
  auto status = r.err.find("status: domain g (1)");
  ASSERT_NE(status, std::string::npos);
  auto line = r.err.substr(status, r.err.find('\n', status) - status);
  EXPECT_NE(line.find("b "), std::string::npos) << line;
  EXPECT_NE(line.find("a "), std::string::npos) << line;
  EXPECT_NE(line.find("(removed by a reload)"), std::string::npos) << line;
  EXPECT_NE(line.find("1 armed, 0 pending"), std::string::npos) << line;
  EXPECT_NE(r.err.find("removed by a reload", status + line.size()), std::string::npos)
    << "and in the summary: " << r.err;
}

TEST(cli, run_without_a_config_reads_the_service_default_not_the_demo) {
  auto r = run_vmitap({"run"});
  EXPECT_EQ(r.rc, 2) << r.all();
  EXPECT_NE(r.err.find("/etc/vmitap/vmitap.toml"), std::string::npos) << r.all();
}

TEST(cli, the_log_level_works_before_and_after_the_subcommand) {
  auto path = write_temp_file("quiet.toml", run_base);
  for (auto args : {std::vector<std::string>{"--log-level", "warn", "run", "--config", path,
                                             "--max-seconds", "1"},
                    std::vector<std::string>{"run", "--config", path, "--max-seconds", "1",
                                             "--log-level", "warn"}}) {
    auto r = run_vmitap(args);
    EXPECT_EQ(r.rc, 0) << r.all();
    EXPECT_EQ(r.err.find("attached"), std::string::npos) << "info is off: " << r.err;
  }
}

TEST(cli, a_metrics_flag_overrides_the_file_and_bad_ones_are_refused) {
  auto path = write_temp_file("metrics.toml", run_base);
  auto r = run_vmitap({"run", "--config", path, "--metrics", "127.0.0.1:0", "--max-seconds", "1"});
  EXPECT_EQ(r.rc, 0) << r.all();
  EXPECT_NE(r.err.find("metrics: http://127.0.0.1:"), std::string::npos) << r.all();
  r = run_vmitap({"run", "--config", path, "--metrics", "127.0.0.1:99999"});
  EXPECT_EQ(r.rc, 2) << r.all();
  EXPECT_NE(r.err.find("the port must be 0 to 65535"), std::string::npos) << r.all();
  r = run_vmitap({"run", "--config", path, "--hits", "x.jsonl"});
  EXPECT_EQ(r.rc, 2) << "a demo flag is refused, not ignored: " << r.all();
}

TEST(cli, without_xen_the_xen_driver_says_so_in_one_line_and_exits_4) {
  if (access("/dev/xen/privcmd", F_OK) == 0)
    GTEST_SKIP() << "this machine runs on Xen";
  auto r = run_vmitap({"domains", "--driver", "xen"});
  EXPECT_EQ(r.rc, 4);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(
    r.err,
    "no Xen hypervisor here: /dev/xen/privcmd missing (No such file or directory, errno 2)\n");
}

// Regression: `domains --driver foo` dereferenced the missing backend row and segfaulted.
TEST(cli, an_unknown_driver_is_a_usage_error_naming_the_drivers) {
  auto r = run_vmitap({"domains", "--driver", "foo"});
  EXPECT_EQ(r.rc, 2) << r.all();
  EXPECT_NE(r.err.find("foo"), std::string::npos) << r.all();
  EXPECT_NE(r.err.find("sim"), std::string::npos) << r.all();
}

TEST(cli, the_binary_links_debians_xen_libraries) {
  auto r = run_command("/usr/bin/ldd", {VMITAP_BINARY});
  ASSERT_EQ(r.rc, 0) << r.all();
  for (auto lib : {"libxenctrl.so.4.17", "libxenevtchn.so.1", "libxenforeignmemory.so.1",
                   "libxenstore.so.4", "libxentoollog.so.1"})
    EXPECT_NE(r.out.find(lib), std::string::npos) << lib << " in\n" << r.out;
}

namespace {

/// A run config whose domain's hits go to `sink` (a [sink.NAME] table).
std::string with_sink(const std::string& sink) {
  auto text = run_base;
  text.replace(text.find("[[domain]]\nname = \"g\"\n"),
               std::string("[[domain]]\nname = \"g\"\n").size(),
               sink + "\n[[domain]]\nname = \"g\"\nsinks = [\"s\"]\n");
  return text;
}

/// Sends SIGTERM when it goes, so a failed wait never leaves the child running.
struct stop_on_exit {
  pid_t pid;
  ~stop_on_exit() { kill(pid, SIGTERM); }
};

/// Hits of breakpoint `name` in the verification table vmitap prints at exit.
uint64_t hits_in_summary(const std::string& err, const std::string& name) {
  auto at = err.find("\ng ");
  while (at != std::string::npos) {
    std::istringstream row(err.substr(at + 1, err.find('\n', at + 1) - at - 1));
    std::string domain, bp, view, pa;
    uint64_t hits = 0;
    if (row >> domain >> bp >> view >> pa >> hits && bp == name)
      return hits;
    at = err.find("\ng ", at + 1);
  }
  return 0;
}

size_t valid_records(const std::string& path) {
  std::ifstream in(path);
  size_t n = 0;
  for (std::string line; std::getline(in, line); ++n)
    EXPECT_EQ(nlohmann::json::parse(line).at("type"), "hit") << path << ": " << line;
  return n;
}

}  // namespace

TEST(cli, a_taken_metrics_port_exits_3_naming_the_port_and_address) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(listen(fd, 1), 0);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  auto port = std::to_string(ntohs(addr.sin_port));
  auto path = write_temp_file("taken.toml", run_base);
  auto r = run_vmitap({"run", "--config", path, "--metrics", "127.0.0.1:" + port});
  close(fd);
  EXPECT_EQ(r.rc, 3) << r.all();
  EXPECT_NE(r.err.find("port " + port + " on 127.0.0.1 is in use"), std::string::npos) << r.all();
}

// `vmitap run | jq -c .` works: with a stdout sink, standard output holds hit records only.
TEST(cli, with_a_stdout_sink_every_line_of_stdout_is_a_hit_record) {
  auto path = write_temp_file("stdout.toml", with_sink("[sink.s]\ntype = \"stdout\"\n"));
  auto r = run_vmitap({"run", "--config", path}, [](pid_t pid, const output_fn& out) {
    stop_on_exit stop{pid};
    EXPECT_TRUE(wait_for_output(out, "\"type\":\"hit\""));
  });
  EXPECT_EQ(r.rc, 0) << r.err;
  std::istringstream lines(r.out);
  size_t n = 0;
  for (std::string line; std::getline(lines, line); ++n)
    EXPECT_EQ(nlohmann::json::parse(line).at("type"), "hit") << line;
  EXPECT_GT(n, 0u);
  EXPECT_EQ(n, hits_in_summary(r.err, "a")) << "one record per hit:\n" << r.err;
}

// logrotate moves the file, then sends SIGUSR1: vmitap reopens the path, and the two files
// together hold one record per hit.
TEST(cli, logrotate_move_then_sigusr1_loses_no_record) {
  auto dir = fresh_temp_dir("logrotate-run");
  auto hits = dir + "/hits.jsonl";
  auto path = write_temp_file("logrotate.toml",
                              with_sink("[sink.s]\ntype = \"jsonl\"\npath = \"" + hits + "\"\n"));
  auto r = run_vmitap({"run", "--config", path}, [&](pid_t pid, const output_fn&) {
    stop_on_exit stop{pid};
    ASSERT_TRUE(wait_for_text(hits, "\"type\":\"hit\""));
    ASSERT_EQ(std::rename(hits.c_str(), (hits + ".1").c_str()), 0);
    kill(pid, SIGUSR1);
    EXPECT_TRUE(wait_for_text(hits, "\"type\":\"hit\"")) << "records reach the new file";
  });
  EXPECT_EQ(r.rc, 0) << r.err;
  auto moved = valid_records(hits + ".1"), reopened = valid_records(hits);
  EXPECT_GT(moved, 0u);
  EXPECT_GT(reopened, 0u);
  EXPECT_EQ(moved + reopened, hits_in_summary(r.err, "a")) << r.err;
}

// Regression (issue 10): a configured run stopped after a hidden hour and exited 0, so a
// service manager did not restart it. No limit unless asked, and --help says so.
TEST(cli, a_configured_run_has_no_time_limit_unless_asked_and_help_says_so) {
  auto r = run_vmitap({"run", "--help"});
  EXPECT_EQ(r.rc, 0) << r.all();
  auto at = r.out.find("--max-seconds");
  ASSERT_NE(at, std::string::npos) << r.out;
  EXPECT_NE(r.out.find("=0", at), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("0: run until a signal", at), std::string::npos) << r.out;
}

// Regression (issue 20): on a full disk every record failed, one log line said so, and the run
// ended "verified", exit 0. The summary now counts each sink's records and the exit code is 5.
TEST(cli, a_run_that_lost_hit_records_says_so_per_sink_and_exits_5) {
  auto r = run_vmitap({"demo", "--instructions", "30000", "--hits", "/dev/full", "--metrics", ""});
  EXPECT_EQ(r.rc, 5) << r.all();
  EXPECT_NE(r.err.find("verified:"), std::string::npos) << "the monitoring itself held";
  EXPECT_NE(r.err.find("RECORDS LOST"), std::string::npos) << r.err;
  auto row = r.err.find("\nhits ");
  ASSERT_NE(row, std::string::npos) << r.err;
  std::istringstream cols(r.err.substr(row + 6, r.err.find('\n', row + 1) - row - 6));
  uint64_t written = 1, failed = 0, dropped = 0;
  cols >> written >> failed >> dropped;
  EXPECT_EQ(written, 0u) << "nothing reaches /dev/full";
  EXPECT_GT(failed + dropped, 0u);
  // And a run that wrote every record still exits 0, with its sink's row.
  auto dir = fresh_temp_dir("lost");
  auto ok =
    run_vmitap({"demo", "--instructions", "30000", "--hits", dir + "/hits.jsonl", "--metrics", ""});
  EXPECT_EQ(ok.rc, 0) << ok.all();
  EXPECT_EQ(ok.err.find("RECORDS LOST"), std::string::npos) << ok.err;
  EXPECT_NE(ok.err.find("\nhits "), std::string::npos) << ok.err;
}

// Regression (issue 20): `--max-seconds 0.5` stopped after 0.1 s and 1.9 after 1.0 s.
TEST(cli, max_seconds_keeps_its_fraction) {
  auto path = write_temp_file("fraction.toml", run_base);
  for (double limit : {0.5, 1.9}) {
    auto r = run_vmitap({"run", "--config", path, "--max-seconds", std::to_string(limit)});
    EXPECT_EQ(r.rc, 0) << r.all();
    auto at = r.err.find(" events in ");
    ASSERT_NE(at, std::string::npos) << r.err;
    double ran = std::strtod(r.err.c_str() + at + 11, nullptr);
    EXPECT_GE(ran, limit) << "stopped early: " << r.err.substr(at, 60);
    EXPECT_NE(r.err.find("--max-seconds reached"), std::string::npos) << r.err;
  }
}

// Regression (issue 20): `vmitap domains --config F` listed the demo's guests whatever F's
// driver: a Xen user got the fake guests and exit 0.
TEST(cli, domains_uses_the_configs_driver_and_refuses_a_flag_that_contradicts_it) {
  auto xen = write_temp_file("xen-domains.toml", "[engine]\ndriver = \"xen\"\n");
  if (access("/dev/xen/privcmd", F_OK) != 0) {
    auto r = run_vmitap({"domains", "--config", xen});
    EXPECT_EQ(r.rc, 4) << "the config's driver, Xen, is not here: " << r.all();
    EXPECT_EQ(r.out.find("web-1"), std::string::npos) << r.out;
  }
  auto r = run_vmitap({"domains", "--config", xen, "--driver", "sim"});
  EXPECT_EQ(r.rc, 2) << r.all();
  EXPECT_NE(r.err.find("--driver sim, but " + xen + " says driver = \"xen\""), std::string::npos)
    << r.err;
  auto sim = write_temp_file("sim-domains.toml", run_base);
  r = run_vmitap({"domains", "--config", sim});
  EXPECT_EQ(r.rc, 0) << r.all();
  EXPECT_NE(r.out.find("\n1      g "), std::string::npos) << r.out;
}

// Regression (issue 20): `vmitap help` and `vmitap version` were unknown commands.
TEST(cli, help_and_version_work_as_commands_and_the_version_says_what_it_was_built_with) {
  auto help = run_vmitap({"help"});
  EXPECT_EQ(help.rc, 0) << help.all();
  EXPECT_NE(help.out.find("Subcommands:"), std::string::npos) << help.out;
  auto version = run_vmitap({"version"});
  EXPECT_EQ(version.rc, 0) << version.all();
  auto flag = run_vmitap({"--version"});
  EXPECT_EQ(flag.rc, 0) << flag.all();
  EXPECT_EQ(version.out, flag.out);
  EXPECT_NE(version.out.find("built with CAF 0.17."), std::string::npos) << version.out;
  EXPECT_NE(version.out.find("libxenctrl 4.17"), std::string::npos) << version.out;
}

// Regression (issue 20): under systemd the log had no priorities (every line "info" in the
// journal) and a second timestamp. With stderr the journal's stream (JOURNAL_STREAM), each
// event is one entry with its priority; here, without a journal socket, the stream's `<N>`
// prefix carries it.
TEST(cli, under_systemd_each_log_event_is_one_journal_entry_with_its_priority) {
  if (access("/run/systemd/journal/socket", F_OK) == 0)
    GTEST_SKIP() << "a journal runs here: the entries go to it, not to the stream";
  auto path = write_temp_file("journal.toml", run_base);
  auto r =
    run_command("/bin/sh", {"-c", "JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) exec " +
                                    std::string(VMITAP_BINARY) + " run --config " + path +
                                    " --max-seconds 0.3"});
  EXPECT_EQ(r.rc, 0) << r.all();
  bool info = false, warning = false;
  std::istringstream lines(r.err);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("<6>", 0) == 0 && line.find("domain g (1)") != std::string::npos)
      info = true;  // "attached", or at least "detached" should the stop come first
    if (line.rfind("<4>", 0) == 0 && line.find("no sinks") != std::string::npos)
      warning = true;
    EXPECT_EQ(line.find("[20"), std::string::npos) << "no timestamp of ours: " << line;
  }
  EXPECT_TRUE(info) << r.err;
  EXPECT_TRUE(warning) << "the config's warnings, one entry: " << r.err;
}
