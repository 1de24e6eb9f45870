// A trial of the vmitap binary as a service manager and an operator drive it: a random
// config on the sim; SIGHUP storms over rewritten files (good ones changing breakpoints,
// step modes and domains, bad ones of every kind), SIGUSR1/SIGUSR2, and the stop — SIGTERM
// or SIGINT pending before main() starts, within 3 ms of main() blocking it, or mid-run.
// vmitap's own summary verifies every hit against the sim's ground truth and the
// invariants; the exit code says whether it held.

#include "drivers/sim/hypervisor.hpp"
#include "tests/campaign/campaign.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_files.hpp"

#include <gtest/gtest.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

namespace vmitap::testing::campaign {
namespace {

using namespace std::chrono_literals;

struct guest {
  std::string name;
  uint32_t vcpus = 1;
  uint64_t instructions = 0;
  uint64_t seed = 1;
  std::vector<uint64_t> entries;  // its functions' entry addresses
};

const char* const modes[] = {"fast", "classic", "emulate"};

/// A valid config: the sim's guests and, for each, a [[domain]] with a few breakpoints.
std::string good_config(const std::vector<guest>& guests, dice& d) {
  std::ostringstream out;
  out << "[engine]\npollers = " << 1 + d.below(2) << "\n\n[metrics]\nlisten = \"\"\n\n"
      << "[sim]\nlatency_us = " << (d.one_in(3) ? d.below(30) : 0) << "\n";
  for (auto& g : guests)
    out << "\n[[sim.domain]]\nname = \"" << g.name << "\"\nvcpus = " << g.vcpus
        << "\nmemory_mib = 16\ninstructions = " << g.instructions << "\nseed = " << g.seed << "\n";
  for (auto& g : guests) {
    if (d.one_in(6))
      continue;  // not monitored in this version of the file
    out << "\n[[domain]]\n";
    if (d.one_in(3))
      out << "pattern = \"" << g.name.substr(0, 2) << "*\"\n";  // every guest: names are unique
    else
      out << "name = \"" << g.name << "\"\n";
    out << "step = \"" << modes[d.below(3)] << "\"\n";
    std::set<uint64_t> armed;  // names are unique per domain
    for (auto n = d.below(5); n > 0; --n) {
      auto fn = d.below(g.entries.size());
      if (!armed.insert(fn).second)
        continue;
      out << "\n[[domain.breakpoint]]\nname = \"fn" << fn << "\"\naddress = " << g.entries[fn]
          << "\n";
      if (d.one_in(5))
        out << "max_hits_per_second = " << 100 + d.below(1000)
            << "\ncooldown_ms = " << 10 + d.below(200) << "\n";
    }
    if (d.one_in(4))
      break;  // the pattern above may select the rest
  }
  return out.str();
}

/// A file `check` rejects: broken syntax, a missing or repeated name, an empty array, a
/// nested table, an address outside the guest, an unknown key.
std::string bad_config(const std::string& good, dice& d) {
  switch (d.below(7)) {
    case 0:
      return good + "\n[[domain]\nname = \"x\"\n";
    case 1:
      return good + "\n[[domain]]\nstep = \"fast\"\n";
    case 2:
      return good + "\n[[domain]]\nname = \"x\"\n[[domain.breakpoint]]\naddress = 4096\n";
    case 3:
      return good + "\n[[domain]]\nname = \"x\"\nviews = []\n";
    case 4:
      return good + "\n[[domain]]\nname = \"x\"\n[domain.breakpoint.inner]\nkey = 1\n";
    case 5:
      return good +
             "\n[[domain]]\nname = \"x\"\n[[domain.breakpoint]]\nname = \"b\"\n"
             "address = 0x40000000\n";
    default:
      return good + "\n[engine]\nno_such_key = 1\n";
  }
}

void write_file(const std::string& path, const std::string& text) {
  auto tmp = path + ".new";
  std::ofstream(tmp) << text;
  std::filesystem::rename(tmp, path);  // as an editor saves: the file is whole at the signal
}

/// The events vmitap's summary counted ("N events in T s").
uint64_t events_in(const std::string& err) {
  auto at = err.find(" events in ");
  if (at == std::string::npos)
    return 0;
  auto begin = err.rfind('\n', at);
  begin = begin == std::string::npos ? 0 : begin + 1;
  return std::stoull(err.substr(begin, at - begin));
}

/// The hits of the verification table's rows that equal ground truth ("… hits truth exact").
uint64_t exact_hits_in(const std::string& err) {
  uint64_t sum = 0;
  std::istringstream lines(err);
  for (std::string line; std::getline(lines, line);) {
    if (line.size() < 6 || line.compare(line.size() - 6, 6, " exact") != 0)
      continue;
    std::istringstream cols(line);
    std::string domain, name, view, pa;
    uint64_t hits = 0;
    if (cols >> domain >> name >> view >> pa >> hits)
      sum += hits;
  }
  return sum;
}

/// Waits until `pid` runs vmitap's main() and has blocked `sig`: from then on a signal must
/// be acted on. (One that comes earlier meets the kernel's default action, before any of
/// vmitap's code runs; the pending-at-start trials cover that moment.)
bool wait_until_blocking(pid_t pid, int sig) {
  auto deadline = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < deadline) {
    std::ifstream status("/proc/" + std::to_string(pid) + "/status");
    bool vmitap = false;
    for (std::string line; std::getline(status, line);) {
      if (line.rfind("Name:", 0) == 0)
        vmitap = line.find("vmitap") != std::string::npos;
      if (vmitap && line.rfind("SigBlk:", 0) == 0 &&
          (std::stoull(line.substr(7), nullptr, 16) >> (sig - 1) & 1))
        return true;
    }
    std::this_thread::sleep_for(20us);
  }
  return false;
}

}  // namespace

void process_trial(uint64_t seed, tally& t) {
  dice d(seed);
  // The guests, and their functions' entries read off the same image the binary will build.
  sim::hypervisor_config quiet;
  quiet.threaded = false;
  sim::hypervisor image{quiet};
  std::vector<guest> guests;
  for (auto n = 1 + d.below(3); n > 0; --n) {
    guest g{"g" + std::to_string(guests.size()),
            uint32_t(1 + d.below(3)),
            d.one_in(3) ? 50000 + d.below(300000) : 0,
            1 + d.below(9),
            {}};
    sim::domain_config dc;
    dc.name = g.name;
    dc.vcpus = g.vcpus;
    dc.memory_mib = 16;
    dc.workload.seed = g.seed;
    auto made = image.create_domain(dc);
    ASSERT_TRUE(made) << "seed " << seed;
    for (auto& fn : (*made)->code().functions())
      g.entries.push_back(fn.entry_pa);
    guests.push_back(std::move(g));
  }
  auto dir = fresh_temp_dir("campaign-" + std::to_string(seed));
  auto path = dir + "/vmitap.toml";
  write_file(path, good_config(guests, d));

  int stop = d.one_in(2) ? SIGTERM : SIGINT;
  enum { pending, at_once, mid_run } when = d.one_in(6) ? pending : d.one_in(4) ? at_once : mid_run;
  std::vector<int> before_start;
  if (when == pending)
    before_start.push_back(stop);
  // The storm: each step a rewrite and SIGHUP, or SIGUSR1/SIGUSR2, a few ms apart.
  std::vector<std::pair<int, std::string>> storm;
  for (auto n = d.below(12); n > 0; --n) {
    int sig = d.one_in(5) ? (d.one_in(2) ? SIGUSR1 : SIGUSR2) : SIGHUP;
    std::string text;
    if (sig == SIGHUP) {
      text = good_config(guests, d);
      if (d.one_in(3))
        text = bad_config(text, d);
    }
    storm.push_back({sig, text});
  }
  auto gap = std::chrono::milliseconds(d.below(60));
  auto at_once_delay = std::chrono::microseconds(d.below(3000));
  auto settle = std::chrono::milliseconds(d.below(300));  // the guests run before the storm

  auto started = std::chrono::steady_clock::now();
  auto r = run_command(
    VMITAP_BINARY, {"run", "--config", path, "--max-seconds", "60"},
    [&](pid_t pid, const output_fn& out) {
      if (when == pending)
        return;
      if (when == at_once) {
        ASSERT_TRUE(wait_until_blocking(pid, stop));
        std::this_thread::sleep_for(at_once_delay);
        kill(pid, stop);
        ++t.signals;
        return;
      }
      if (!wait_for_output(out, "vmitap: " + path, 30000))
        return;  // it ended early: its exit code says why
      std::this_thread::sleep_for(settle);
      for (auto& [sig, text] : storm) {
        if (!text.empty())
          write_file(path, text);
        kill(pid, sig);
        ++t.signals;
        t.reloads += sig == SIGHUP;
        std::this_thread::sleep_for(gap);
      }
      kill(pid, stop);
      ++t.signals;
    },
    {}, before_start);
  auto took = std::chrono::steady_clock::now() - started;
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.err.find("verified:"), std::string::npos) << r.err;
  EXPECT_LT(took, 50s) << "it did not stop on its signal:\n" << r.err;
  t.events += events_in(r.err);
  t.hits_checked += exact_hits_in(r.err);
  if (std::getenv("VMITAP_CAMPAIGN_VERBOSE"))
    std::printf("trial %llu (stop %s, %s, %zu storm steps):\n%s\n", (unsigned long long)seed,
                stop == SIGTERM ? "SIGTERM" : "SIGINT",
                when == pending   ? "pending at start"
                : when == at_once ? "at once"
                                  : "mid-run",
                storm.size(), r.err.c_str());
  ++t.trials;
}

}  // namespace vmitap::testing::campaign
