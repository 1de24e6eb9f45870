// Generated configs, built from the schema's structure rather than from bytes: sections
// present or missing, names missing or duplicated, empty arrays, tables where values belong
// and values where tables belong, numbers at and beyond their ranges. Every one must give a
// valid config or errors with positions; a valid one must describe itself and start its
// backend. Byte-level mutations of the example follow.

#include "drivers/error.hpp"
#include "drivers/sim/domain.hpp"
#include "drivers/sim/kernel.hpp"
#include "engine/backends.hpp"
#include "engine/config.hpp"
#include "tests/support/temp_files.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <random>
#include <sstream>

using namespace vmitap;

namespace {

/// A real profile for the generated guests (the sim's "g" kernel, Linux), written once.
const std::string& profile_path() {
  static const std::string path = [] {
    sim::domain_config dc;
    dc.name = "g";
    return vmitap::testing::write_temp_file("g.isf.json", *sim::kernel_profile_json(dc));
  }();
  return path;
}

class generator {
public:
  explicit generator(uint64_t seed) : rng_(seed) {}

  std::string config() {
    static const double rates[] = {0, 0, 0.03, 0.15, 0.4};
    rate_ = rates[below(std::size(rates))];  // how wrong this config is
    toml::table root;
    if (chance(0.5))
      root.insert("engine", engine());
    if (chance(0.4))
      root.insert("metrics", metrics());
    if (chance(0.5))
      root.insert("sink", sinks());
    if (chance(0.8))
      root.insert("sim", sim());
    if (chance(0.85))
      root.insert("domain", domains());
    if (chance(0.05))
      root.insert(word(), anything(2));
    std::ostringstream out;
    out << root;
    return out.str();
  }

private:
  bool chance(double p) { return std::uniform_real_distribution<>(0, 1)(rng_) < p; }
  size_t below(size_t n) { return n ? rng_() % n : 0; }

  std::string word() {
    static const char* words[] = {"main", "shadow", "web-1", "db-1", "g",     "",       "x y", "ü",
                                  "*",    "web-*",  "hits",  "name", "views", "domain", "sim"};
    return words[below(std::size(words))];
  }

  /// Any TOML value, nested up to `depth`: what a confused user could put anywhere.
  std::unique_ptr<toml::node> anything_ptr(int depth) {
    switch (below(depth > 0 ? 8 : 5)) {
      case 0:
        return std::make_unique<toml::value<std::string>>(word());
      case 1:
        return std::make_unique<toml::value<int64_t>>(number());
      case 2:
        return std::make_unique<toml::value<bool>>(chance(0.5));
      case 3:
        return std::make_unique<toml::value<double>>(1.5);
      case 4:
        return std::make_unique<toml::array>();
      case 5: {
        auto a = std::make_unique<toml::array>();
        for (size_t i = 0, n = below(3); i < n; ++i)
          a->push_back(*anything_ptr(depth - 1));
        return a;
      }
      default: {
        auto t = std::make_unique<toml::table>();
        for (size_t i = 0, n = below(3); i < n; ++i)
          t->insert(word().empty() ? "k" : word(), *anything_ptr(depth - 1));
        return t;
      }
    }
  }
  toml::table anything(int depth) {
    toml::table t;
    t.insert("value", *anything_ptr(depth));
    return t;
  }

  int64_t number() {
    static const int64_t edges[] = {0,
                                    1,
                                    2,
                                    8,
                                    9,
                                    10,
                                    64,
                                    128,
                                    129,
                                    256,
                                    4096,
                                    65535,
                                    65536,
                                    -1,
                                    INT64_MAX,
                                    INT64_MIN,
                                    0x100000,
                                    0x1000000,
                                    4294967295LL,
                                    4294967296LL};
    return chance(0.7) ? edges[below(std::size(edges))] : int64_t(rng_() % 100000);
  }

  /// A key's value: mostly right, sometimes the wrong type, sometimes missing.
  template <class F>
  void maybe(toml::table& t, const char* key, F good) {
    double r = std::uniform_real_distribution<>(0, 1)(rng_);
    if (r < rate_ * 0.5)
      return;  // missing
    if (r < rate_) {
      t.insert(key, *anything_ptr(2));  // the wrong kind of thing
      return;
    }
    good(t, key);
  }
  /// A value from `good` most of the time, an edge case at this config's error rate.
  int64_t num(int64_t lo, int64_t hi) {
    return chance(rate_) ? number() : lo + int64_t(below(uint64_t(hi - lo + 1)));
  }
  bool wrong() { return chance(rate_); }

  toml::table metrics() {
    toml::table t;
    maybe(t, "listen", [&](auto& t, auto k) {
      static const char* listen[] = {
        "", "127.0.0.1:0", "[::1]:0", "garbage", "127.0.0.1:99999", "10474", "localhost:0"};
      t.insert(k, listen[wrong() ? below(std::size(listen)) : below(3)]);
    });
    return t;
  }

  toml::table engine() {
    toml::table t;
    maybe(t, "driver", [&](auto& t, auto k) { t.insert(k, chance(0.8) ? "sim" : "xen"); });
    maybe(t, "worker_threads", [&](auto& t, auto k) { t.insert(k, num(1, 4)); });
    maybe(t, "pollers", [&](auto& t, auto k) { t.insert(k, num(0, 2)); });
    maybe(t, "stop_deadline_seconds", [&](auto& t, auto k) { t.insert(k, num(1, 30)); });
    return t;
  }

  toml::table sinks() {
    toml::table t;
    for (size_t i = 0, n = below(3); i < n; ++i) {
      toml::table s;
      bool file = i > 0 || chance(0.7) || wrong();
      maybe(s, "type", [&](auto& s, auto k) { s.insert(k, file ? "jsonl" : "stdout"); });
      if (file)
        maybe(s, "path", [&](auto& s, auto k) {
          static const char* paths[] = {"/tmp/vmitap-gen.jsonl", "", "/tmp", "/nonexistent/x"};
          s.insert(k, paths[wrong() ? below(4) : 0]);
        });
      maybe(s, "queue", [&](auto& s, auto k) { s.insert(k, num(1, 1000)); });
      t.insert(i == 0 && !wrong() ? "hits" : word().empty() ? "e" : word() + std::to_string(i), s);
    }
    return t;
  }

  toml::table sim() {
    toml::table t;
    toml::array domains;
    for (size_t i = 0, n = below(4); i < n; ++i) {
      toml::table d;
      maybe(d, "name",
            [&](auto& d, auto k) { d.insert(k, wrong() ? word() : "g" + std::to_string(i)); });
      maybe(d, "vcpus", [&](auto& d, auto k) { d.insert(k, num(1, 4)); });
      maybe(d, "memory_mib", [&](auto& d, auto k) { d.insert(k, chance(0.5) ? 8 : num(8, 64)); });
      maybe(d, "functions", [&](auto& d, auto k) { d.insert(k, num(6, 200)); });
      maybe(d, "instructions", [&](auto& d, auto k) { d.insert(k, 1000); });
      if (chance(0.3))
        maybe(d, "abi", [&](auto& d, auto k) { d.insert(k, abi()); });
      if (chance(0.2))
        maybe(d, "processes", [&](auto& d, auto k) { d.insert(k, num(1, 64)); });
      if (chance(0.2))
        maybe(d, "record_calls", [&](auto& d, auto k) { d.insert(k, chance(0.5)); });
      if (chance(0.2)) {
        maybe(d, "module_functions", [&](auto& d, auto k) { d.insert(k, num(0, 12)); });
        maybe(d, "module_interval", [&](auto& d, auto k) { d.insert(k, num(0, 100)); });
      }
      domains.push_back(d);
    }
    if (!wrong())
      t.insert("domain", domains);
    else
      t.insert("domain", *anything_ptr(1));
    return t;
  }

  toml::array domains() {
    toml::array out;
    for (size_t i = 0, n = below(4); i < n; ++i) {
      toml::table d;
      // One selector, as a config should have: mostly each entry its own domain; sometimes
      // two selectors, none, or two entries for one domain (each an error check names).
      auto selector = below(10);
      if (selector < 6 || wrong())
        maybe(d, "name",
              [&](auto& d, auto k) { d.insert(k, "g" + std::to_string(wrong() ? below(3) : i)); });
      if ((selector >= 6 && selector < 8) || wrong())
        maybe(d, "pattern", [&](auto& d, auto k) { d.insert(k, word()); });
      if (selector == 8 || wrong())
        maybe(d, "id", [&](auto& d, auto k) { d.insert(k, num(1, 4)); });
      bool two = chance(0.5);
      maybe(d, "views", [&](auto& d, auto k) {
        toml::array v;
        for (size_t j = 0, m = wrong() ? below(3) : 1 + two; j < m; ++j)
          v.push_back(wrong() ? word() : (j ? "shadow" : "main"));
        d.insert(k, v);  // sometimes empty
      });
      maybe(d, "step", [&](auto& d, auto k) {
        static const char* modes[] = {"fast", "classic", "emulate", "slow"};
        d.insert(k, modes[wrong() ? 3 : below(3)]);
      });
      if (chance(0.3))
        maybe(d, "abi", [&](auto& d, auto k) { d.insert(k, abi()); });
      // A kernel: os and profile together (or one alone, the other os, a missing file).
      bool kernel = chance(0.3);
      if (kernel) {
        maybe(d, "os", [&](auto& d, auto k) { d.insert(k, wrong() ? word() : "linux"); });
        maybe(d, "profile", [&](auto& d, auto k) {
          d.insert(k, wrong() ? (chance(0.5) ? word() : "/nonexistent.json") : profile_path());
        });
        if (chance(0.3))
          maybe(d, "processes", [&](auto& d, auto k) { d.insert(k, globs()); });
      }
      if (chance(0.3))
        maybe(d, "vcpu_views", [&](auto& d, auto k) {
          toml::table vv;
          vv.insert(wrong() ? std::to_string(number()) : "0", two && !wrong() ? "shadow" : "main");
          d.insert(k, vv);
        });
      toml::array bps;
      for (size_t j = 0, m = below(4); j < m; ++j) {
        toml::table b;
        maybe(b, "name",
              [&](auto& b, auto k) { b.insert(k, "bp" + std::to_string(wrong() ? below(3) : j)); });
        // One target (sometimes none, sometimes two): a symbol, a kernel va, an address.
        auto target = kernel && !wrong() ? below(3) : wrong() ? below(3) : 2;
        if (target == 0 || wrong())
          maybe(b, "symbol", [&](auto& b, auto k) {
            static const char* names[] = {"do_sys_openat2", "ksys_read", "ksys_raed", "",
                                          "NtClose"};
            b.insert(k, names[wrong() ? below(std::size(names)) : below(2)]);
          });
        if ((target == 0 && chance(0.3)) || wrong())
          maybe(b, "offset",
                [&](auto& b, auto k) { b.insert(k, wrong() ? number() : num(0, 64)); });
        if (target == 1 || wrong())
          maybe(b, "va", [&](auto& b, auto k) {
            static const char* vas[] = {"0xffffffff80100000",  "0x0000900000000000",  "0x", "-1",
                                        "0xffffffff80100000x", "18446744073709551616"};
            if (wrong() && chance(0.5))
              b.insert(k, number());
            else
              b.insert(k, vas[wrong() ? below(std::size(vas)) : 0]);
          });
        if (target == 2 || wrong())
          maybe(b, "address", [&](auto& b, auto k) {
            b.insert(k, wrong() ? number() : num(0x100000, 0x101000));
          });
        if (chance(0.15))
          maybe(b, "processes", [&](auto& b, auto k) { b.insert(k, globs()); });
        if (chance(0.3))
          maybe(b, "view", [&](auto& b, auto k) {
            b.insert(k, two && !wrong() ? "shadow" : wrong() ? word() : "main");
          });
        if (chance(0.4))
          maybe(b, "capture", [&](auto& b, auto k) { b.insert(k, captures()); });
        if (chance(0.2))  // a registered handler, an unknown one, a number
          maybe(b, "handler", [&](auto& b, auto k) {
            if (wrong() && chance(0.5))
              b.insert(k, number());
            else
              b.insert(k, wrong() ? word() : "h");
          });
        if (chance(0.15))  // sometimes without its handler
          maybe(b, "handler_deadline_us",
                [&](auto& b, auto k) { b.insert(k, wrong() ? number() : num(1, 10'000'000)); });
        if (chance(0.2))
          maybe(b, "max_hits_per_second",
                [&](auto& b, auto k) { b.insert(k, wrong() ? number() : num(1, 10'000'000)); });
        if (chance(0.15))  // sometimes without its maximum
          maybe(b, "cooldown_ms",
                [&](auto& b, auto k) { b.insert(k, wrong() ? number() : num(1, 3'600'000)); });
        bps.push_back(b);
      }
      if (!wrong())
        d.insert("breakpoint", bps);
      out.push_back(d);
    }
    return out;
  }

  /// Process globs: sometimes empty, sometimes not strings.
  toml::array globs() {
    toml::array a;
    static const char* names[] = {"sshd", "nginx*", "*", "[", ""};
    for (size_t i = 0, n = wrong() ? below(3) : 1 + below(2); i < n; ++i) {
      if (wrong() && chance(0.3))
        a.push_back(number());
      else
        a.push_back(names[wrong() ? below(std::size(names)) : below(3)]);
    }
    return a;
  }

  std::string abi() {
    static const char* abis[] = {"sysv", "ms-x64", "arm64", ""};
    return abis[wrong() ? below(4) : below(2)];
  }

  /// Address expressions: valid ones of every shape, and the ways they go wrong (unclosed
  /// brackets, dangling signs, unknown registers, huge numbers, argument 0 and 17).
  std::string expression() {
    static const char* good[] = {"rdi",        "arg1",
                                 "arg5",       "arg16",
                                 "[rsp+0x28]", "[[arg3+0x10]+8]",
                                 "rax-8",      "[0xffffffff80001000]",
                                 "cr3",        " [ rsp ] + 4 "};
    static const char* bad[] = {"",        "[",        "]",    "[rsp",  "rsp+",
                                "rsp+rax", "eax",      "arg0", "arg17", "0xfffffffffffffffffff",
                                "[[[[",    "rsp ++ 1", "ü",    "-",     "argx"};
    return wrong() ? bad[below(std::size(bad))] : good[below(std::size(good))];
  }

  toml::array captures() {
    toml::array list;
    for (size_t i = 0, n = below(4); i < n; ++i) {  // sometimes empty
      if (chance(0.4)) {
        list.push_back(expression());
        continue;
      }
      toml::table c;
      maybe(c, "name",
            [&](auto& c, auto k) { c.insert(k, wrong() ? word() : "c" + std::to_string(i)); });
      static const char* kinds[] = {"value", "bytes", "string", "wstring"};
      auto kind = kinds[below(4)];
      maybe(c, kind, [&](auto& c, auto k) { c.insert(k, expression()); });
      if (wrong())  // a second kind
        c.insert(kinds[below(4)], expression());
      if (std::string_view(kind) == "bytes" || wrong())
        maybe(c, "length", [&](auto& c, auto k) { c.insert(k, num(1, 4096)); });
      if (std::string_view(kind).find("string") != std::string_view::npos || wrong())
        maybe(c, "max", [&](auto& c, auto k) { c.insert(k, num(1, 4096)); });
      list.push_back(c);
    }
    return list;
  }

  std::mt19937_64 rng_;
  double rate_ = 0;
};

/// The handlers the generated configs may name.
const handler_registry& known_handlers() {
  static const auto reg = [] {
    handler_registry r;
    r.add("h", [](const handler_hit&) { return handler_decision::resume(); });
    return r;
  }();
  return reg;
}

/// Parses `text`; a valid config must describe itself and its backend must start.
bool check(const std::string& text, const std::string& name) {
  auto cfg = parse_config(text, name, &known_handlers());
  if (!cfg) {
    EXPECT_EQ(code_of(cfg.error()), ec::config_invalid);
    EXPECT_EQ(context_of(cfg.error()).rfind(name + ":", 0), 0u) << context_of(cfg.error());
    return false;
  }
  EXPECT_FALSE(describe(*cfg).empty());
  if (cfg->driver == "sim") {
    auto started = find_backend("sim")->start(*cfg);
    EXPECT_TRUE(started) << "valid for check, so valid for run:\n"
                         << text << "\n"
                         << (started ? "" : render(started.error()));
  }
  return true;
}

}  // namespace

TEST(config_generator, structured_configs_give_a_valid_config_or_positioned_errors) {
  generator gen{20261125};
  size_t valid = 0, invalid = 0, captured = 0, handled = 0, limited = 0, by_symbol = 0;
  for (int i = 0; i < 3000; ++i) {
    auto text = gen.config();
    if (!check(text, "gen.toml")) {
      ++invalid;
      continue;
    }
    ++valid;
    auto cfg = parse_config(text, "gen.toml", &known_handlers());
    for (auto& d : cfg->engine.domains)
      for (auto& bp : d.plan->breakpoints) {
        captured += !bp.options.captures.empty();
        handled += bool(bp.options.handler);
        limited += bp.options.limit.max_per_second > 0;
        by_symbol += bp.target.by == breakpoint_target::kind::symbol;
      }
  }
  EXPECT_GT(valid, 150u) << "the generator reaches valid configs";
  EXPECT_GT(invalid, 1500u) << "and invalid ones";
  EXPECT_GT(captured, 20u) << "and valid breakpoints with captures";
  EXPECT_GT(handled, 10u) << "with handlers";
  EXPECT_GT(limited, 10u) << "with rate limits";
  EXPECT_GT(by_symbol, 10u) << "and armed by symbol from a profile";
  std::printf(
    "%zu valid (breakpoints: %zu with captures, %zu with handlers, %zu with rate "
    "limits, %zu by symbol), %zu invalid\n",
    valid, captured, handled, limited, by_symbol, invalid);
}

TEST(config_generator, byte_mutations_of_the_example_never_crash) {
  std::ifstream in(VMITAP_SOURCE_DIR "/examples/demo.toml");
  std::string seed((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_FALSE(seed.empty());
  std::mt19937_64 rng(12345);
  const std::string tokens[] = {
    "[",          "]",      "[[",   "]]",   "=",     "\"",  "'",
    "{",          "}",      ",",    "\n",   "0x",    "-1",  "99999999999999999999",
    "true",       "domain", "sink", "view", "=\"\"", "# c", "\\u0000",
    "1979-05-27", "inf",    "nan",  "."};
  size_t invalid = 0;
  for (int i = 0; i < 1500; ++i) {
    std::string text = seed;
    for (int e = 0, edits = 1 + int(rng() % 8); e < edits && !text.empty(); ++e) {
      size_t at = rng() % text.size();
      switch (rng() % 4) {
        case 0:
          text.erase(at, 1 + rng() % 12);
          break;
        case 1:
          text.insert(at, tokens[rng() % std::size(tokens)]);
          break;
        case 2:
          text[at] = char(rng() % 256);
          break;
        default:
          text.insert(at, text.substr(rng() % text.size(), rng() % 40));
          break;
      }
    }
    invalid += !check(text, "fuzz.toml");
  }
  EXPECT_GT(invalid, 500u) << "the mutations do produce broken configs";
}
