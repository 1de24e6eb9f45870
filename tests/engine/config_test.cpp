// The config: every validation error with its exact position, the examples through
// `vmitap check`, and the inputs that used to crash or pass `check` and then fail `run`.

#include "engine/config.hpp"
#include "drivers/error.hpp"
#include "drivers/sim/domain.hpp"
#include "drivers/sim/kernel.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_files.hpp"

#include <gtest/gtest.h>

#include <unistd.h>
#include <filesystem>
#include <fstream>
#include <sstream>

using namespace vmitap;
using namespace vmitap::testing;

namespace {

std::string problems(const std::string& text) {
  auto cfg = parse_config(text, "t.toml");
  if (cfg)
    return "";
  EXPECT_EQ(code_of(cfg.error()), ec::config_invalid);
  return context_of(cfg.error());
}

const char* valid_base = R"(
[[sim.domain]]
name = "g"
vcpus = 2
memory_mib = 16

[[domain]]
name = "g"
views = ["main"]
)";

command_result run_vmitap(std::vector<std::string> args) {
  return run_command(VMITAP_BINARY, std::move(args));
}

}  // namespace

TEST(config_validation, every_problem_names_file_line_column_key_and_expectation) {
  struct bad {
    std::string text;
    std::string expected;
  };
  std::string base = valid_base;
  std::vector<bad> cases = {
    {"[engine]\nbogus = 1\n", "t.toml:2:1: engine.bogus: unknown key (expected one of: driver, "},
    {"[engine]\nworker_threads = \"two\"\n",
     "t.toml:2:18: engine.worker_threads: expected an integer from 1 to 256"},
    {"[engine]\nworker_threads = 0\n",
     "t.toml:2:18: engine.worker_threads: expected an integer from 1 to 256, got 0"},
    {"[engine]\ndriver = \"kvm\"\n", "t.toml:2:10: engine.driver: expected one of \"sim\""},
    {base + "[[domain.breakpoint]]\nname = \"a\"\naddress = 0x1000\n[[domain.breakpoint]]\nname = "
            "\"a\"\naddress = 0x2000\n",
     "t.toml:14:8: domain[0].breakpoint[1].name: duplicate breakpoint name \"a\" in this domain"},
    {base + "[[domain.breakpoint]]\nname = \"far\"\naddress = 0x1000000\n",
     "t.toml:12:11: domain[0].breakpoint[0].address: address is not in guest memory of sim domain "
     "\"g\" (16 MiB)"},
    {base + "[[domain.breakpoint]]\nname = \"v\"\naddress = 0x1000\nview = \"shadow\"\n",
     "t.toml:13:8: domain[0].breakpoint[0].view: view \"shadow\" is not declared"},
    {base + "[[domain.breakpoint]]\naddress = 0x1000\n",
     "t.toml:10:1: domain[0].breakpoint[0].name: missing"},
    {base + "[[domain.breakpoint]]\nname = \"n\"\naddress = -1\n",
     "t.toml:12:11: domain[0].breakpoint[0].address: expected an integer from 0 to"},
    {"[sink.h]\ntype = \"jsonl\"\npath = \"/proc/nonexistent-dir/h.jsonl\"\n",
     "t.toml:3:8: sink.h.path: \"/proc/nonexistent-dir/h.jsonl\" directory /proc is not writable"},
    {"[sink.h]\ntype = \"jsonl\"\npath = \"\"\n",
     "t.toml:3:8: sink.h.path: \"\" must not be empty"},
    {"[sink.h]\ntype = \"jsonl\"\npath = \"/tmp\"\n",
     "t.toml:3:8: sink.h.path: \"/tmp\" is a directory"},
    {"[sink.h]\ntype = \"syslog\"\n",
     "t.toml:2:8: sink.h.type: expected \"jsonl\" or \"stdout\", got \"syslog\""},
    {"[sink.a]\ntype = \"stdout\"\n[sink.b]\ntype = \"stdout\"\n",
     "t.toml:4:8: sink.b.type: only one sink may write to stdout"},
    {"[metrics]\nlisten = \"127.0.0.1:99999\"\n",
     "t.toml:2:10: metrics.listen: \"127.0.0.1:99999\": the port must be 0 to 65535"},
    {"[metrics]\nlisten = \"garbage\"\n",
     "t.toml:2:10: metrics.listen: \"garbage\": the port is not a number"},
    {"[[domain]]\nviews = [\"main\"]\n",
     "t.toml:1:1: domain[0]: missing a selector: name, id or pattern"},
    {"[[domain]]\nname = \"x\"\nsinks = [\"nope\"]\n",
     "t.toml:3:9: domain[0].sinks: no sink named \"nope\""},
    {"[[domain]]\nname = \"x\"\nstep = \"slow\"\n",
     "t.toml:3:8: domain[0].step: expected \"fast\", \"classic\" or \"emulate\", got \"slow\""},
    {"[[domain]]\nname = \"x\"\nvcpu_views = { 1 = \"other\" }\n",
     "t.toml:3:20: domain[0].vcpu_views.1: view \"other\" is not declared"},
    {base + "vcpu_views = { 7 = \"main\" }\n",
     "t.toml:10:16: domain[0].vcpu_views.7: sim domain \"g\" has 2 VCPUs (0 to 1)"},
    {"[[domain]]\nname = \"x\"\nvcpu_views = { -1 = \"main\" }\n",
     "domain[0].vcpu_views.-1: expected a VCPU number"},
    {"[[domain]]\nname = \"x\"\nvcpu_views = { 4294967296 = \"main\" }\n",
     "domain[0].vcpu_views.4294967296: expected a VCPU number"},
    {"[[sim.domain]]\nname = \"small\"\nmemory_mib = 1\n",
     "t.toml:3:14: sim.domain[0].memory_mib: sim workload: code and data need 2 MiB of guest "
     "memory, the domain has 1 MiB"},
    {"[[sim.domain]]\nname = \"m\"\nfunctions = 8\nmodule_functions = 8\n",
     "t.toml:4:20: sim.domain[0].module_functions: must be fewer than functions (8)"},
    {"[[sim.domain]]\nname = \"m\"\nmodule_interval = 0\n",
     "t.toml:3:19: sim.domain[0].module_interval: "},
    {"domain = 3\n", "t.toml:1:10: domain: expected an array of tables ([[domain]])"},
    {"[xen]\n", "t.toml:1:1: xen: a [xen] section, but the driver is \"sim\""},
    {"[engine\n", "t.toml:1:8: syntax: "},
  };
  for (auto& c : cases) {
    auto msg = problems(c.text);
    EXPECT_NE(msg.find(c.expected), std::string::npos)
      << "config:\n"
      << c.text << "\nexpected: " << c.expected << "\ngot: " << msg;
  }
  EXPECT_EQ(problems(valid_base), "");
}

// Regression (issue 8): `check` segfaulted on these.
TEST(config_validation, missing_names_and_empty_views_are_errors_not_crashes) {
  auto two_unnamed = problems("[[sim.domain]]\nvcpus = 1\n[[sim.domain]]\nvcpus = 1\n");
  EXPECT_NE(two_unnamed.find("t.toml:1:1: sim.domain[0].name: missing"), std::string::npos)
    << two_unnamed;
  EXPECT_NE(two_unnamed.find("t.toml:3:1: sim.domain[1].name: missing"), std::string::npos)
    << two_unnamed;
  auto empty_views = problems(
    "[[domain]]\nname = \"x\"\nviews = []\n[[domain.breakpoint]]\n"
    "name = \"a\"\naddress = 0x1000\n");
  EXPECT_NE(empty_views.find("t.toml:3:9: domain[0].views: expected at least one entry"),
            std::string::npos)
    << empty_views;
}

TEST(config_validation, all_problems_are_reported_in_file_order) {
  auto msg = problems("[engine]\nworker_threads = \"x\"\nbogus = 2\n[metrics]\nlisten = 5\n");
  auto a = msg.find("t.toml:2:"), b = msg.find("t.toml:3:"), c = msg.find("t.toml:5:");
  ASSERT_NE(a, std::string::npos) << msg;
  ASSERT_NE(b, std::string::npos) << msg;
  ASSERT_NE(c, std::string::npos) << msg;
  EXPECT_LT(a, b);
  EXPECT_LT(b, c);
}

TEST(config_validation, a_selector_that_matches_no_sim_domain_is_a_warning) {
  auto cfg =
    parse_config(std::string(valid_base) + "[[domain]]\npattern = \"nothing-*\"\n", "t.toml");
  ASSERT_TRUE(cfg) << render(cfg.error());
  EXPECT_NE(
    cfg->warnings.find("t.toml:10:1: domain[1]: warning: pattern=nothing-* selects no domain"),
    std::string::npos)
    << cfg->warnings;
}

TEST(config_validation, an_existing_sink_file_vmitap_cannot_write_is_an_error) {
  namespace fs = std::filesystem;
  auto path = write_temp_file("readonly.jsonl", "");
  fs::permissions(path, fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read);
  auto text = "[sink.h]\ntype = \"jsonl\"\npath = \"" + path + "\"\n";
  if (geteuid() != 0) {
    auto msg = problems(text);
    EXPECT_NE(msg.find("exists and is not writable"), std::string::npos) << msg;
    return;
  }
  // Root may write any file: check as an unprivileged user, with a copy of the binary (the
  // build directory may be out of that user's reach).
  auto config = write_temp_file("readonly.toml", text);
  auto binary = process_temp_dir() + "/vmitap";
  fs::copy_file(VMITAP_BINARY, binary, fs::copy_options::overwrite_existing);
  fs::permissions(process_temp_dir(), fs::perms::owner_all | fs::perms::group_read |
                                        fs::perms::group_exec | fs::perms::others_read |
                                        fs::perms::others_exec);
  fs::permissions(config, fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read);
  auto r = run_command("/usr/bin/setpriv", {"--reuid=65534", "--regid=65534", "--clear-groups",
                                            binary, "check", "--config", config});
  EXPECT_EQ(r.rc, 2) << r.all();
  EXPECT_NE(r.err.find("exists and is not writable"), std::string::npos) << r.all();
}

// Regression (issue 20) for xen-host.toml: its header tells a newcomer to check it, and it
// failed where the package was not installed (/var/log/vmitap did not exist): a sink's
// missing directories are created when it opens, and check says so in a warning.
TEST(config_cli, examples_pass_check_and_print_their_topology) {
  for (auto name : {"demo.toml", "xen-host.toml"}) {
    auto r = run_vmitap({"check", "--config", std::string(VMITAP_SOURCE_DIR "/examples/") + name});
    EXPECT_EQ(r.rc, 0) << name << ":\n" << r.all();
    EXPECT_NE(r.out.find("breakpoint"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("domain "), std::string::npos) << r.out;
  }
}

TEST(config_cli, a_broken_config_prints_its_position_and_exits_2) {
  auto path = write_temp_file("broken.toml", "[engine]\nworker_threads = \"many\"\n");
  auto r = run_vmitap({"check", "--config", path});
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find(path + ":2:18: engine.worker_threads: expected an integer"),
            std::string::npos)
    << r.all();
  EXPECT_EQ(r.all().find("terminate"), std::string::npos) << "no exception trace";
  EXPECT_EQ(run_vmitap({"run", "--config", path}).rc, 2);
  r = run_vmitap({"check", "--config", process_temp_dir() + "/does-not-exist.toml"});
  EXPECT_EQ(r.rc, 2) << r.all();
  EXPECT_NE(r.err.find("cannot open"), std::string::npos) << r.all();
}

TEST(config_cli, a_directory_is_not_a_config) {
  auto r = run_vmitap({"check", "--config", ::testing::TempDir()});
  EXPECT_EQ(r.rc, 2) << r.all();
  EXPECT_NE(r.err.find("is a directory"), std::string::npos) << r.all();
}

TEST(config_cli, domains_lists_what_the_driver_sees) {
  auto r = run_vmitap({"domains", "--config", VMITAP_SOURCE_DIR "/examples/demo.toml"});
  EXPECT_EQ(r.rc, 0) << r.all();
  EXPECT_NE(r.out.find("web-1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("build-1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("8 MiB"), std::string::npos) << "the smallest guest, listed, not aborted";
}

TEST(config_validation, captures_compile_with_the_domains_calling_convention) {
  auto cfg = parse_config(std::string(valid_base) + R"(abi = "ms-x64"
[[domain.breakpoint]]
name = "NtCreateFile"
address = 0x100000
capture = ["arg1", { name = "path", wstring = "[[arg3+0x10]+8]", max = 260 },
           { name = "fifth", value = "arg5" }, { name = "head", bytes = "rcx", length = 16 }]
)",
                          "t.toml");
  ASSERT_TRUE(cfg) << render(cfg.error());
  auto& bp = cfg->engine.domains.at(0).plan->breakpoints.at(0);
  ASSERT_FALSE(bp.options.captures.empty());
  auto& specs = *bp.options.captures.specs;
  ASSERT_EQ(specs.size(), 4u);
  auto ms = drv::calling_convention::ms_x64;
  EXPECT_EQ(specs[0].name, "arg1");
  EXPECT_EQ(specs[0].at.base, &drv::registers::rcx);  // Microsoft x64's first argument
  EXPECT_EQ(specs[1].type, capture_spec::kind::utf16);
  EXPECT_EQ(specs[1].length, 260u);
  EXPECT_EQ(specs[1].at, *parse_address_expr("[[r8+0x10]+8]", ms).expr);
  EXPECT_EQ(specs[2].at, *parse_address_expr("[rsp+0x28]", ms).expr);
  EXPECT_EQ(specs[3].type, capture_spec::kind::bytes);
  EXPECT_EQ(specs[3].length, 16u);
  // The same captures under System V read other registers: a reload sees the change.
  auto sysv = parse_config(std::string(valid_base) + R"([[domain.breakpoint]]
name = "NtCreateFile"
address = 0x100000
capture = ["arg1"]
)",
                           "t.toml");
  ASSERT_TRUE(sysv) << render(sysv.error());
  EXPECT_EQ(
    sysv->engine.domains.at(0).plan->breakpoints.at(0).options.captures.specs->at(0).at.base,
    &drv::registers::rdi);
  EXPECT_FALSE(sysv->engine.domains.at(0).plan->breakpoints.at(0) == bp);
}

TEST(config_validation, capture_errors_point_at_the_character) {
  std::string bp =
    std::string(valid_base) + "[[domain.breakpoint]]\nname = \"f\"\naddress = 0x100000\n";
  struct bad {
    std::string text;
    std::string expected;
  };
  std::vector<bad> cases = {
    {bp + "capture = [\"rsp+\"]\n",
     "t.toml:13:17: domain[0].breakpoint[0].capture[0]: \"rsp+\": expected a number after \"+\""},
    {bp + "capture = [\"[rsp+0x28\"]\n",
     "t.toml:13:22: domain[0].breakpoint[0].capture[0]: \"[rsp+0x28\": expected \"]\""},
    {bp + "capture = [\"rax\", \"eax\"]\n",
     "t.toml:13:20: domain[0].breakpoint[0].capture[1]: \"eax\": unknown register \"eax\""},
    {bp + "capture = [{ value = \"rax\" }]\n",
     "t.toml:13:12: domain[0].breakpoint[0].capture[0].name: missing: a table capture needs a "
     "name"},
    {bp + "capture = [{ name = \"x\" }]\n",
     "t.toml:13:12: domain[0].breakpoint[0].capture[0]: missing what to read: value, bytes, string "
     "or wstring"},
    {bp + "capture = [{ name = \"x\", value = \"rax\", string = \"rdi\" }]\n",
     "domain[0].breakpoint[0].capture[0].string: a capture reads one of value, bytes, string or "
     "wstring"},
    {bp + "capture = [{ name = \"x\", bytes = \"rax\" }]\n",
     "t.toml:13:12: domain[0].breakpoint[0].capture[0].length: missing: how many bytes to read"},
    {bp + "capture = [{ name = \"x\", bytes = \"rax\", length = 0 }]\n",
     "domain[0].breakpoint[0].capture[0].length: expected an integer from 1 to 4096, got 0"},
    {bp + "capture = [{ name = \"x\", string = \"rax\", max = 5000 }]\n",
     "domain[0].breakpoint[0].capture[0].max: expected an integer from 1 to 4096, got 5000"},
    {bp + "capture = [{ name = \"x\", value = \"rax\", length = 4 }]\n",
     "domain[0].breakpoint[0].capture[0].length: only a bytes capture has a length"},
    {bp + "capture = [\"rax\", { name = \"rax\", value = \"rbx\" }]\n",
     "domain[0].breakpoint[0].capture[1]: duplicate capture name \"rax\" in this breakpoint"},
    {bp + "capture = [{ name = \"x\", value = \"rax\", nested = { deep = [] } }]\n",
     "domain[0].breakpoint[0].capture[0].nested: unknown key"},
    {bp + "capture = [[\"rax\"]]\n",
     "domain[0].breakpoint[0].capture[0]: expected an expression string or a table"},
    {bp + "capture = \"rax\"\n", "domain[0].breakpoint[0].capture: expected an array of captures"},
    {bp + "capture = [{ name = \"x\", value = 7 }]\n",
     "domain[0].breakpoint[0].capture[0]: expected an address expression string"},
    {std::string(valid_base) + "abi = \"arm64\"\n",
     "t.toml:10:7: domain[0].abi: expected \"sysv\" (Linux) or \"ms-x64\" (Windows), got "
     "\"arm64\""},
  };
  for (auto& c : cases) {
    auto msg = problems(c.text);
    EXPECT_NE(msg.find(c.expected), std::string::npos)
      << "config:\n"
      << c.text << "\nexpected: " << c.expected << "\ngot: " << msg;
  }
  EXPECT_EQ(problems(bp + "capture = []\n"), "");
}

TEST(config_validation, a_handler_must_be_registered_and_its_deadline_bounded) {
  std::string bp =
    std::string(valid_base) + "[[domain.breakpoint]]\nname = \"f\"\naddress = 0x100000\n";
  handler_registry reg;
  reg.add("skip", [](const handler_hit&) { return handler_decision::resume(); });

  auto cfg = parse_config(bp + "handler = \"skip\"\nhandler_deadline_us = 2500\n", "t.toml", &reg);
  ASSERT_TRUE(cfg) << render(cfg.error());
  auto& b = cfg->engine.domains.at(0).plan->breakpoints.at(0);
  ASSERT_TRUE(b.options.handler);
  EXPECT_EQ(b.options.handler->name, "skip");
  EXPECT_EQ(b.options.handler->deadline, std::chrono::microseconds(2500));
  EXPECT_NE(describe(*cfg).find("handler skip, deadline 2500 µs"), std::string::npos);
  auto plain = parse_config(bp + "handler = \"skip\"\n", "t.toml", &reg);
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->engine.domains.at(0).plan->breakpoints.at(0).options.handler->deadline,
            default_handler_deadline);

  auto bad = [&](const std::string& text, const handler_registry* r) {
    auto c = parse_config(text, "t.toml", r);
    return c ? std::string{} : context_of(c.error());
  };
  EXPECT_EQ(bad(bp + "handler = \"nope\"\n", &reg),
            "t.toml:13:11: domain[0].breakpoint[0].handler: no handler named \"nope\" is "
            "registered (registered: \"skip\")");
  EXPECT_EQ(bad(bp + "handler = \"skip\"\n", nullptr),
            "t.toml:13:11: domain[0].breakpoint[0].handler: no handler named \"skip\" is "
            "registered (this program registers none; handlers come from programs that embed "
            "vmitap, see examples/embed)");
  EXPECT_EQ(bad(bp + "handler_deadline_us = 10\n", &reg),
            "t.toml:13:23: domain[0].breakpoint[0].handler_deadline_us: only a breakpoint with a "
            "handler has a handler deadline");
  EXPECT_EQ(bad(bp + "handler = \"skip\"\nhandler_deadline_us = 0\n", &reg),
            "t.toml:14:23: domain[0].breakpoint[0].handler_deadline_us: expected an integer from "
            "1 to 10000000, got 0");
  EXPECT_EQ(bad(bp + "handler = 3\n", &reg),
            "t.toml:13:11: domain[0].breakpoint[0].handler: expected a handler's name");
}

TEST(config_validation, a_rate_limit_has_a_maximum_and_an_optional_cool_down) {
  std::string bp =
    std::string(valid_base) + "[[domain.breakpoint]]\nname = \"f\"\naddress = 0x100000\n";
  auto cfg = parse_config(bp + "max_hits_per_second = 500\ncooldown_ms = 2000\n", "t.toml");
  ASSERT_TRUE(cfg) << render(cfg.error());
  auto& b = cfg->engine.domains.at(0).plan->breakpoints.at(0);
  EXPECT_EQ(b.options.limit, (rate_limit{500, std::chrono::milliseconds(2000)}));
  EXPECT_NE(describe(*cfg).find("at most 500 hits/s, then disarmed for 2000 ms"),
            std::string::npos);
  auto plain = parse_config(bp + "max_hits_per_second = 1\n", "t.toml");
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->engine.domains.at(0).plan->breakpoints.at(0).options.limit.cooldown,
            std::chrono::milliseconds(1000));
  EXPECT_EQ(parse_config(bp, "t.toml")->engine.domains.at(0).plan->breakpoints.at(0).options.limit,
            rate_limit{})
    << "off by default";

  EXPECT_EQ(problems(bp + "cooldown_ms = 10\n"),
            "t.toml:13:15: domain[0].breakpoint[0].cooldown_ms: only a breakpoint with "
            "max_hits_per_second has a cool-down");
  EXPECT_EQ(problems(bp + "max_hits_per_second = 0\n"),
            "t.toml:13:23: domain[0].breakpoint[0].max_hits_per_second: expected an integer from 1 "
            "to 10000000, got 0");
}

// Regression (issue 21): toml++ 3.3.0 reaches undefined behaviour on a non-ASCII character in
// a bare key (its bug 295); such a key is rejected with its position before toml++ sees it.
TEST(config_validation, a_character_outside_ascii_outside_strings_is_rejected_with_its_place) {
  auto err = problems("[engine]\nwörker_threads = 2\n");
  EXPECT_NE(err.find("t.toml:2:2: syntax:"), std::string::npos) << err;
  EXPECT_NE(err.find("bare keys"), std::string::npos) << err;
  EXPECT_NE(problems("[engine]\n\"w\" = 1 # ok\nnäme = 1\n").find("t.toml:3:2:"),
            std::string::npos);
  // Inside strings and comments they are text: they reach toml++ and the usual checks.
  auto scanned = [](const std::string& text) {
    auto err = problems(text);
    return err.find("outside ASCII") == std::string::npos ? "" : err;
  };
  std::string base = valid_base;
  EXPECT_EQ(problems(base + "# wörker, ünïcode\n"), "");
  EXPECT_EQ(scanned(base + "x = \"hïts\"\n"), "");
  EXPECT_EQ(scanned(base + "x = '''h'ïts'''\n"), "");
  EXPECT_EQ(scanned(base + "x = \"\"\"x\"\"\"\"\n# é\n"), "");
  EXPECT_EQ(scanned(base + "x = \"\"\"\nmulti ï\nline\"\"\"\n"), "");
  EXPECT_EQ(scanned(base + "x = \"a\\\"ï\"\n"), "");
  EXPECT_NE(problems(base + "x = \"\"\"x\"\"\"\"\ny = 1\nké = 1\n").find("t.toml:12:2:"),
            std::string::npos);
  // A quoted key may hold them; the key is then unknown, and said so.
  EXPECT_NE(problems("[engine]\n\"wörker\" = 2\n").find("wörker"), std::string::npos);
}

// Regression (issue 21): 1 MiB breakpoint, tag and capture names or a 10 MiB domain name made
// records so large that the stop gave up on its sinks; 200 captures of 4 096 bytes queued
// 2 GB. `check` rejects each beyond its limit, with the limit in the message.
TEST(config_validation, names_strings_and_captures_beyond_their_limits_are_rejected) {
  std::string base = valid_base;
  auto bp = [&](const std::string& body) {
    return problems(base + "[[domain.breakpoint]]\nname = \"b\"\naddress = 0x1000\n" + body);
  };
  std::string name(257, 'n'), fits(256, 'n');
  EXPECT_NE(
    bp("tags = [\"" + name + "\"]\n").find("longer than 256 bytes (257), the limit for a name"),
    std::string::npos);
  EXPECT_EQ(bp("tags = [\"" + fits + "\"]\n"), "");
  EXPECT_NE(problems(base + "[[domain.breakpoint]]\nname = \"" + name + "\"\naddress = 0x1000\n")
              .find("t.toml:11:8: domain[0].breakpoint[0].name: longer than 256"),
            std::string::npos);
  EXPECT_NE(bp("capture = [\"" + name + "\"]\n").find("the limit for a capture"),
            std::string::npos);
  // Any key, and any string, whatever reads it (here keys nothing knows: the size comes first).
  auto key = problems(base + name + " = 1\n");
  EXPECT_NE(key.find("key longer than 256 bytes (257)"), std::string::npos) << key;
  EXPECT_LT(key.size(), 200u) << "the message does not echo the key whole";
  auto huge = problems(base + "x = \"" + std::string(10 << 20, 'd') + "\"\n");
  EXPECT_NE(
    huge.find(
      "t.toml:10:5: domain[0].x: longer than 4096 bytes (10485760), the limit for a string"),
    std::string::npos)
    << huge.substr(0, 200);
  // Captures: how many, and how much they read at one hit together.
  std::string many = "capture = [";
  for (int i = 0; i < 33; ++i)
    many += "\"[rsp+" + std::to_string(8 * i) + "]\", ";
  many += "]\n";
  EXPECT_NE(bp(many).find("33 captures; a breakpoint may have at most 32"), std::string::npos);
  std::string wide = "capture = [";
  for (int i = 0; i < 5; ++i)
    wide += "{ name = \"c" + std::to_string(i) + "\", bytes = \"rsp\", length = 4096 }, ";
  wide += "]\n";
  EXPECT_NE(bp(wide).find("the captures read 20480 bytes at a hit; at most 16384 together"),
            std::string::npos);
}

// Regression (issue 20): with pattern "web-*" and name "web-1" both selecting web-1, only the
// first entry's breakpoints were armed, and check accepted it. A domain must match exactly
// one entry: check names both entries' lines; a selector is one of name, id or pattern.
TEST(config_validation, entries_that_select_the_same_domain_are_an_error_naming_both_lines) {
  const char* sim = R"(
[[sim.domain]]
name = "web-1"
[[sim.domain]]
name = "db-1"
)";
  auto err = problems(std::string(sim) + R"(
[[domain]]
pattern = "web-*"

[[domain]]
name = "web-1"
)");
  EXPECT_NE(err.find("t.toml:10:1: domain[1]: selects domain \"web-1\" as the entry at line 7 "
                     "does (pattern=web-*): a domain must match exactly one [[domain]] entry"),
            std::string::npos)
    << err;
  // The sim's domains by id: id 2 is db-1.
  err = problems(std::string(sim) + "[[domain]]\nid = 2\n[[domain]]\npattern = \"db*\"\n");
  EXPECT_NE(err.find("t.toml:8:1: domain[1]: selects domain \"db-1\" as the entry at line 6"),
            std::string::npos)
    << err;
  // Where the host is not known (Xen), what the selectors give away: a name a pattern matches.
  err = problems(
    "[engine]\ndriver = \"xen\"\n[[domain]]\nname = \"web-1\"\n[[domain]]\n"
    "pattern = \"web-?\"\n");
  EXPECT_NE(err.find("t.toml:5:1: domain[1]: selects domain \"web-1\" as the entry at line 3"),
            std::string::npos)
    << err;
  EXPECT_EQ(problems("[engine]\ndriver = \"xen\"\n[[domain]]\nname = \"web-1\"\n[[domain]]\n"
                     "pattern = \"db-*\"\n"),
            "");
  // One selector per entry: "one of", as the README says.
  err = problems(std::string(sim) + "[[domain]]\nname = \"web-1\"\nid = 1\n");
  EXPECT_NE(err.find("t.toml:6:1: domain[0]: selects by name=web-1 id=1: give one of name, id "
                     "or pattern"),
            std::string::npos)
    << err;
}

// Regression (issue 20): a sink path root cannot write passed check (access() says yes to
// root) and then failed run with exit 1; an empty config or a domain without sinks passed
// without a word.
TEST(config_validation, a_sink_path_is_tried_and_configs_that_do_nothing_are_warned_of) {
  auto err = problems(
    std::string(valid_base) +
    "sinks = [\"hits\"]\n[sink.hits]\ntype = \"jsonl\"\npath = \"/proc/vmitap-hits.jsonl\"\n");
  EXPECT_NE(err.find("sink.hits.path: \"/proc/vmitap-hits.jsonl\" directory /proc is not writable"),
            std::string::npos)
    << err;
  auto empty = parse_config("", "t.toml");
  ASSERT_TRUE(empty);
  EXPECT_NE(empty->warnings.find("no [[domain]]: nothing will be monitored"), std::string::npos)
    << empty->warnings;
  auto quiet = parse_config(valid_base, "t.toml");
  ASSERT_TRUE(quiet);
  EXPECT_NE(quiet->warnings.find("t.toml:7:1: domain[0]: warning: no sinks"), std::string::npos)
    << quiet->warnings;
}

// From a review of the checks above: a file saved with a UTF-8 byte order mark, a relative
// sink path none of whose directories exist yet, and an id selector beside a name selector
// are all valid.
TEST(config_validation, a_bom_a_relative_new_directory_and_id_zero_beside_a_name_are_valid) {
  std::string base = valid_base;
  EXPECT_EQ(problems("\xEF\xBB\xBF" + base), "");
  auto relative = parse_config(base +
                                 "sinks = [\"h\"]\n[sink.h]\ntype = \"jsonl\"\n"
                                 "path = \"vmitap-new-dir-" +
                                 std::to_string(getpid()) + "/h.jsonl\"\n",
                               "t.toml");
  ASSERT_TRUE(relative) << context_of(relative.error());
  EXPECT_NE(relative->warnings.find("does not exist yet: vmitap creates it"), std::string::npos)
    << relative->warnings;
  EXPECT_EQ(problems("[engine]\ndriver = \"xen\"\n[[domain]]\nid = 0\nsinks = []\n[[domain]]\n"
                     "name = \"web-1\"\nsinks = []\n"),
            "");
}

// --- kernel profiles and symbol targets ------------------------------------------------------

namespace {

/// A profile of the sim guest `g` (16 MiB, seed 1) in a file beside the test's config.
std::string sim_profile_file(const std::string& dir, drv::calling_convention abi) {
  sim::domain_config dc;
  dc.name = "g";
  dc.memory_mib = 16;
  dc.abi = abi;
  auto json = sim::kernel_profile_json(dc);
  EXPECT_TRUE(json);
  std::filesystem::create_directories(process_temp_dir() + "/" + dir);
  return write_temp_file(dir + (abi == drv::calling_convention::sysv ? "/linux.json" : "/win.json"),
                         *json);
}

std::string with_profile(const std::string& path, const std::string& breakpoint) {
  return std::string(valid_base) + "os = \"linux\"\nprofile = \"" + path +
         "\"\n\n[[domain.breakpoint]]\nname = \"b\"\n" + breakpoint;
}

}  // namespace

TEST(config_validation, a_breakpoint_names_exactly_one_target) {
  auto profile = sim_profile_file("targets", drv::calling_convention::sysv);
  EXPECT_EQ(problems(with_profile(profile, "symbol = \"ksys_read\"\n")), "");
  EXPECT_EQ(problems(with_profile(profile, "symbol = \"ksys_read\"\noffset = 4\n")), "");
  EXPECT_EQ(problems(with_profile(profile, "va = \"0xffffffff80100000\"\n")), "");
  EXPECT_EQ(problems(with_profile(profile, "address = 0x100000\n")), "");
  // The line and column of each problem: the breakpoint table at line 13, its keys below.
  EXPECT_EQ(problems(with_profile(profile, "")),
            "t.toml:13:1: domain[0].breakpoint[0]: missing a target: symbol (a kernel symbol), "
            "va (a kernel virtual address) or address (guest physical)");
  EXPECT_EQ(problems(with_profile(profile, "symbol = \"ksys_read\"\naddress = 0x100000\n")),
            "t.toml:16:11: domain[0].breakpoint[0].address: a breakpoint names exactly one "
            "target; this one has symbol and address");
  EXPECT_EQ(problems(with_profile(profile, "address = 0x100000\noffset = 8\n")),
            "t.toml:16:10: domain[0].breakpoint[0].offset: only a symbol target has an offset");
  EXPECT_NE(problems(with_profile(profile, "va = \"0xffff800000000000x\"\n"))
              .find("t.toml:15:6: domain[0].breakpoint[0].va: \"0xffff800000000000x\" is not a hex "
                    "address"),
            std::string::npos);
  EXPECT_NE(problems(with_profile(profile, "va = \"0x0000900000000000\"\n"))
              .find("not a canonical x86-64 address"),
            std::string::npos);
  EXPECT_NE(problems(with_profile(profile, "va = \"0x00007fff00000000\"\n")).find("a user address"),
            std::string::npos);
  EXPECT_NE(
    problems(with_profile(profile, "va = \" 0xffffffff80100000\"\n")).find("not a hex address"),
    std::string::npos);
  EXPECT_NE(problems(with_profile(profile, "va = 4096\n")).find("expected a hex string"),
            std::string::npos);
}

TEST(config_validation, a_symbol_the_profile_lacks_is_shown_with_the_nearest_names) {
  auto profile = sim_profile_file("nearest", drv::calling_convention::sysv);
  auto err = problems(with_profile(profile, "symbol = \"ksys_raed\"\n"));
  EXPECT_NE(err.find("t.toml:15:10: domain[0].breakpoint[0].symbol: no symbol \"ksys_raed\" in " +
                     profile + "; nearest: \"ksys_read\""),
            std::string::npos)
    << err;
}

TEST(config_validation, os_and_profile_go_together_and_must_agree) {
  auto linux_profile = sim_profile_file("os", drv::calling_convention::sysv);
  auto windows_profile = sim_profile_file("os", drv::calling_convention::ms_x64);
  auto base = std::string(valid_base);
  EXPECT_NE(problems(base + "os = \"linux\"\n")
              .find("t.toml:10:6: domain[0].os: os and profile "
                    "go together"),
            std::string::npos);
  EXPECT_NE(problems(base + "os = \"windows\"\nprofile = \"" + linux_profile + "\"\n")
              .find("is a linux kernel's profile, the domain says os = \"windows\""),
            std::string::npos);
  EXPECT_NE(problems(base + "os = \"bsd\"\nprofile = \"" + windows_profile + "\"\n")
              .find("domain[0].os: expected \"linux\" or \"windows\", got \"bsd\""),
            std::string::npos);
  // A profile that cannot be read is named once, not again at every symbol.
  auto err = problems(with_profile("/nonexistent/p.json", "symbol = \"x\"\n"));
  EXPECT_NE(err.find("t.toml:11:11: domain[0].profile: io_failed: open(/nonexistent/p.json)"),
            std::string::npos)
    << err;
  EXPECT_EQ(err.find("symbol"), std::string::npos) << err;
  // Symbols, virtual addresses and processes filters need the profile.
  EXPECT_NE(problems(base + "[[domain.breakpoint]]\nname = \"b\"\nsymbol = \"f\"\n")
              .find("a symbol needs the domain's profile"),
            std::string::npos);
  EXPECT_NE(
    problems(base + "processes = [\"sshd\"]\n").find("domain[0].processes: needs a profile"),
    std::string::npos);
}

TEST(config_validation, a_relative_profile_is_the_config_files_directory_s) {
  auto dir = fresh_temp_dir("relative");
  sim_profile_file("relative", drv::calling_convention::sysv);
  auto config =
    write_temp_file("relative/t.toml", with_profile("linux.json", "symbol = \"ksys_read\"\n"));
  auto cfg = load_config(config);
  ASSERT_TRUE(cfg) << render(cfg.error());
  auto& plan = *cfg->engine.domains[0].plan;
  ASSERT_TRUE(plan.profile);
  EXPECT_EQ(plan.profile->path, dir + "/linux.json");
  EXPECT_EQ(plan.breakpoints[0].target.by, breakpoint_target::kind::symbol);
  EXPECT_EQ(plan.breakpoints[0].target.symbol, "ksys_read");
}

// The profiles examples/demo.toml arms from are what `vmitap sim-profile` writes for its
// guests: committed beside it for `vmitap run`, they must not drift from the sim.
TEST(config_cli, sim_profile_writes_the_examples_profiles_and_symbols_lists_them) {
  auto dir = fresh_temp_dir("sim-profile");
  for (auto name : {"web-1", "db-1"}) {
    auto out = dir + "/" + name + ".isf.json";
    auto r = run_vmitap({"sim-profile", "--config", VMITAP_SOURCE_DIR "/examples/demo.toml",
                         "--domain", name, "--out", out});
    ASSERT_EQ(r.rc, 0) << r.all();
    std::ifstream written(out),
      committed(std::string(VMITAP_SOURCE_DIR "/examples/profiles/") + name + ".isf.json");
    std::stringstream a, b;
    a << written.rdbuf();
    b << committed.rdbuf();
    EXPECT_EQ(a.str(), b.str()) << name << ": run vmitap sim-profile to refresh examples/profiles";
  }
  auto r = run_vmitap({"symbols", "--profile", dir + "/db-1.isf.json", "Nt*File"});
  EXPECT_EQ(r.rc, 0) << r.all();
  EXPECT_NE(r.out.find(" NtCreateFile\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(" NtReadFile\n"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("NtClose"), std::string::npos) << "only the glob's names: " << r.out;
  EXPECT_NE(r.err.find("windows kernel, ISF 6.2.0"), std::string::npos) << r.err;
  r = run_vmitap({"symbols", "--profile", dir + "/db-1.isf.json", "nothing*"});
  EXPECT_EQ(r.rc, 1) << "a glob that matches nothing fails: " << r.all();
  r = run_vmitap(
    {"sim-profile", "--config", VMITAP_SOURCE_DIR "/examples/demo.toml", "--domain", "nope"});
  EXPECT_EQ(r.rc, 1) << r.all();
  EXPECT_NE(r.err.find("no [[sim.domain]] named \"nope\""), std::string::npos) << r.err;
}
