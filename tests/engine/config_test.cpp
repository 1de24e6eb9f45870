// The config: every validation error with its exact position, the examples through
// `vmitap check`, garbage that must never crash, live reload with exact hits before and
// after, and a bad reload that changes nothing.

#include "drivers/sim/sim_driver.hpp"
#include "engine/config.hpp"
#include "engine/demo.hpp"
#include "engine/error.hpp"

#include <gtest/gtest.h>

#include <csignal>
#include <fstream>
#include <random>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

using namespace vmitap;
using namespace std::chrono_literals;

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
vcpus = 1
memory_mib = 16

[[domain]]
name = "g"
views = ["main"]
)";

struct command_result {
  int rc = -1;
  std::string out;
};

/// Runs vmitap with `args`; `during` runs (with the child's pid) while it does.
command_result run_vmitap(std::vector<std::string> args, std::function<void(pid_t)> during = {}) {
  int pipefd[2];
  if (pipe(pipefd) != 0)
    return {};
  pid_t pid = fork();
  if (pid == 0) {
    dup2(pipefd[1], STDOUT_FILENO);
    dup2(pipefd[1], STDERR_FILENO);
    std::vector<char*> argv{const_cast<char*>(VMITAP_BINARY)};
    for (auto& a : args)
      argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(VMITAP_BINARY, argv.data());
    _exit(127);
  }
  close(pipefd[1]);
  if (during)
    during(pid);
  command_result r;
  char buf[4096];
  for (ssize_t n; (n = read(pipefd[0], buf, sizeof buf)) > 0;)
    r.out.append(buf, size_t(n));
  close(pipefd[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

}  // namespace

TEST(config_validation, every_problem_names_file_line_column_key_and_expectation) {
  struct bad {
    std::string text;
    std::string expected;
  };
  std::vector<bad> cases = {
    {"[engine]\nbogus = 1\n", "t.toml:2:1: engine.bogus: unknown key (expected one of: driver, "},
    {"[engine]\nworker_threads = \"two\"\n", "t.toml:2:18: engine.worker_threads: expected an integer"},
    {"[engine]\nworker_threads = 0\n", "t.toml:2:18: engine.worker_threads: expected an integer from 1 to 256, got 0"},
    {"[engine]\ndriver = \"kvm\"\n", "t.toml:2:10: engine.driver: expected \"sim\" or \"xen\", got \"kvm\""},
    {std::string(valid_base) + "[[domain.breakpoint]]\nname = \"a\"\naddress = 0x1000\n"
       "[[domain.breakpoint]]\nname = \"a\"\naddress = 0x2000\n",
     "t.toml:14:8: domain[0].breakpoint[1].name: duplicate breakpoint name \"a\" in this domain"},
    {std::string(valid_base) + "[[domain.breakpoint]]\nname = \"far\"\naddress = 0x1000000\n",
     "t.toml:12:11: domain[0].breakpoint[0].address: address is not in guest memory of sim domain \"g\" (16 MiB)"},
    {std::string(valid_base) + "[[domain.breakpoint]]\nname = \"v\"\naddress = 0x1000\nview = \"shadow\"\n",
     "t.toml:13:8: domain[0].breakpoint[0].view: view \"shadow\" is not declared (views: main)"},
    {"[sink.h]\ntype = \"jsonl\"\npath = \"/nonexistent-dir/h.jsonl\"\n",
     "t.toml:3:8: sink.h.path: directory /nonexistent-dir does not exist or is not writable"},
    {"[sink.h]\ntype = \"syslog\"\n", "t.toml:2:8: sink.h.type: expected \"jsonl\" or \"stdout\", got \"syslog\""},
    {"[[domain]]\nviews = [\"main\"]\n", "t.toml:1:1: domain[0]: missing a selector: name, id or pattern"},
    {"[[domain]]\nname = \"x\"\nsinks = [\"nope\"]\n", "t.toml:3:9: domain[0].sinks: no sink named \"nope\""},
    {"[[domain]]\nname = \"x\"\nstep = \"slow\"\n", "t.toml:3:8: domain[0].step: expected \"fast\" or \"classic\", got \"slow\""},
    {"[[domain]]\nname = \"x\"\nvcpu_views = { 1 = \"other\" }\n",
     "t.toml:3:20: domain[0].vcpu_views.1: view \"other\" is not declared (views: main)"},
    {"domain = 3\n", "t.toml:1:10: domain: expected an array of tables ([[domain]])"},
    {"[engine\n", "t.toml:1:8: syntax: "},
  };
  for (auto& c : cases) {
    auto msg = problems(c.text);
    EXPECT_NE(msg.find(c.expected), std::string::npos)
      << "config:\n" << c.text << "\nexpected: " << c.expected << "\ngot: " << msg;
  }
  EXPECT_EQ(problems(valid_base), "");
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

TEST(config_validation, random_garbage_never_crashes) {
  std::ifstream in(VMITAP_SOURCE_DIR "/examples/demo.toml");
  std::string seed_text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_FALSE(seed_text.empty());
  std::mt19937_64 rng(12345);
  const std::string tokens[] = {"[", "]", "[[", "]]", "=", "\"", "'", "{", "}", ",", "\n", "0x",
                                "-1", "99999999999999999999", "true", "domain", "sink", "view",
                                "=\"\"", "# c", "\\u0000", "1979-05-27", "inf", "nan", "."};
  size_t invalid = 0;
  for (int i = 0; i < 1500; ++i) {
    std::string text = seed_text;
    int edits = 1 + int(rng() % 8);
    for (int e = 0; e < edits && !text.empty(); ++e) {
      size_t at = rng() % text.size();
      switch (rng() % 4) {
        case 0: text.erase(at, 1 + rng() % 12); break;
        case 1: text.insert(at, tokens[rng() % std::size(tokens)]); break;
        case 2: text[at] = char(rng() % 256); break;
        default: text.insert(at, text.substr(rng() % text.size(), rng() % 40)); break;
      }
    }
    auto cfg = parse_config(text, "fuzz.toml");
    if (!cfg) {
      ++invalid;
      EXPECT_EQ(code_of(cfg.error()), ec::config_invalid);
      EXPECT_EQ(context_of(cfg.error()).rfind("fuzz.toml", 0), 0u) << context_of(cfg.error());
    }
  }
  EXPECT_GT(invalid, 500u) << "the mutations do produce broken configs";
  for (int i = 0; i < 300; ++i) {
    std::string bytes(rng() % 300, '\0');
    for (auto& ch : bytes)
      ch = char(rng() % 256);
    (void) parse_config(bytes, "random.toml");
  }
}

TEST(config_cli, examples_pass_check_and_print_their_topology) {
  for (auto name : {"demo.toml", "xen-host.toml"}) {
    auto r = run_vmitap({"check", "--config", std::string(VMITAP_SOURCE_DIR "/examples/") + name});
    EXPECT_EQ(r.rc, 0) << name << ":\n" << r.out;
    EXPECT_NE(r.out.find("breakpoint"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("domain "), std::string::npos) << r.out;
  }
}

TEST(config_cli, a_broken_config_prints_its_position_and_exits_2) {
  auto path = testing::TempDir() + "broken.toml";
  std::ofstream(path) << "[engine]\nworker_threads = \"many\"\n";
  auto r = run_vmitap({"check", "--config", path});
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.out.find(path + ":2:18: engine.worker_threads: expected an integer"),
            std::string::npos)
    << r.out;
  EXPECT_EQ(r.out.find("terminate"), std::string::npos) << "no exception trace";
  r = run_vmitap({"run", "--config", path});
  EXPECT_EQ(r.rc, 2) << r.out;
  r = run_vmitap({"check", "--config", testing::TempDir() + "does-not-exist.toml"});
  EXPECT_EQ(r.rc, 2) << r.out;
  EXPECT_NE(r.out.find("cannot open"), std::string::npos) << r.out;
}

TEST(config_cli, domains_lists_what_the_driver_sees) {
  auto r = run_vmitap({"domains", "--config", VMITAP_SOURCE_DIR "/examples/demo.toml"});
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("web-1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("db-1"), std::string::npos) << r.out;
  r = run_vmitap({"domains", "--driver", "xen"});
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.out.find("xen"), std::string::npos) << r.out;
}

TEST(config_reload, sighup_with_a_bad_file_keeps_the_engine_running_unchanged) {
  auto path = testing::TempDir() + "reload.toml";
  auto good = std::string("[metrics]\nlisten = \"\"\n") + valid_base
              + "[[domain.breakpoint]]\nname = \"a\"\naddress = 0x100000\n";
  std::ofstream(path) << good;
  auto r = run_vmitap({"run", "--config", path, "--max-seconds", "3"}, [&](pid_t pid) {
    std::this_thread::sleep_for(1s);
    std::ofstream(path) << good << "[[domain.breakpoint]]\nname = \"a\"\naddress = 0x100004\n";
    kill(pid, SIGHUP);
  });
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("reload rejected, the running configuration stays"), std::string::npos)
    << r.out;
  EXPECT_NE(r.out.find(path + ":"), std::string::npos) << "with the position";
  EXPECT_NE(r.out.find("verified:"), std::string::npos) << r.out;
}

TEST(config_reload, adding_and_removing_breakpoints_live_keeps_hits_exact) {
  auto hv = std::make_shared<sim::hypervisor>();
  sim::domain_config dc;
  dc.name = "live";
  dc.vcpus = 2;
  dc.workload.seed = 9;
  auto dom = hv->create_domain(dc);
  auto f = dom->code().functions();
  auto keep = f[0].entry_pa, removed = dom->code().at(f[0].first + 1).pa, added = f[3].entry_pa;
  engine_config cfg;
  cfg.metrics_listen = "";
  engine_config::domain_entry e;
  e.select.name = "live";
  e.plan.breakpoints = {{"keep", keep, "main", {}}, {"removed", removed, "main", {}}};
  cfg.domains.push_back(e);
  engine eng{cfg, std::make_shared<sim::sim_driver>(hv)};
  ASSERT_FALSE(eng.start());
  std::this_thread::sleep_for(200ms);

  auto hits = [&] {
    std::map<std::string, uint64_t> out;
    for (auto& r : eng.status())
      for (auto& bp : r.breakpoints)
        out[bp->spec.name] = bp->hits->load();
    return out;
  };
  // A VCPU may have trapped on an address (hit counted) and not yet retired the instruction.
  auto reached = [&](uint64_t pa) { return dom->reached(pa, 1); };
  ASSERT_FALSE(dom->pause());  // a quiet moment to read ground truth against
  auto before = hits();        // status() drains: every raised event is counted
  auto reached_removed = reached(removed);
  auto reached_added_before = reached(added);
  EXPECT_EQ(before["keep"], reached(keep));
  EXPECT_EQ(before["removed"], reached_removed);

  auto next = cfg;
  next.domains[0].plan.breakpoints = {{"keep", keep, "main", {}}, {"added", added, "main", {}}};
  ASSERT_FALSE(eng.reload(next));
  ASSERT_FALSE(dom->resume());
  std::this_thread::sleep_for(200ms);
  ASSERT_FALSE(dom->pause());
  auto after = hits();
  EXPECT_EQ(after.count("removed"), 0u);
  EXPECT_EQ(after["keep"], reached(keep)) << "armed throughout";
  EXPECT_EQ(after["added"], reached(added) - reached_added_before) << "since armed";
  EXPECT_GT(after["added"], 0u);
  EXPECT_GT(reached(removed), reached_removed) << "it kept running, unarmed";
  auto families = eng.metrics().registry()->Collect();
  for (auto& fam : families) {
    if (fam.name == "vmitap_breakpoints") {
      EXPECT_EQ(fam.metric.at(0).gauge.value, 2);
    }
  }
  ASSERT_FALSE(dom->resume());
  auto reports = eng.stop();
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_TRUE(reports[0].error.empty()) << reports[0].error;
  auto inv = dom->check();
  EXPECT_TRUE(inv.holds());
  EXPECT_EQ(inv.answered_by_detach, 0u);
}
