#include "bench/profile_load.hpp"

#include "drivers/error.hpp"
#include "drivers/guest/profile.hpp"

#include <fmt/format.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <unordered_set>

extern char** environ;

namespace vmitap::bench {

namespace {

using clock_type = std::chrono::steady_clock;

/// Writes JSON indented as Go's encoder does (dwarf2json), to a plain file and a .gz at once.
class isf_writer {
public:
  explicit isf_writer(const std::string& path) :
    plain_(std::fopen(path.c_str(), "wb")), gz_(gzopen((path + ".gz").c_str(), "wb6")) {
    out_ = "{";
  }
  ~isf_writer() {
    out_ += "\n}\n";
    flush();
    std::fclose(plain_);
    gzclose(gz_);
  }

  void open(std::string_view key, char bracket = '{') {
    next_line();
    out_ += fmt::format("\"{}\": {}", key, bracket);
    ++depth_;
    first_ = true;
  }
  void close(char bracket = '}') {
    --depth_;
    if (!first_) {
      out_ += '\n';
      out_.append(2 * depth_ + 2, ' ');
    }
    out_ += bracket;
    first_ = false;
    if (out_.size() > (1 << 20))
      flush();
  }
  void value(std::string_view key, std::string_view text) {
    next_line();
    out_ += fmt::format("\"{}\": \"{}\"", key, text);
  }
  void value(std::string_view key, uint64_t n) {
    next_line();
    out_ += fmt::format("\"{}\": {}", key, n);
  }
  void flag(std::string_view key, bool b) {
    next_line();
    out_ += fmt::format("\"{}\": {}", key, b ? "true" : "false");
  }

private:
  void next_line() {
    if (!first_)
      out_ += ',';
    out_ += '\n';
    out_.append(2 * depth_ + 2, ' ');
    first_ = false;
  }
  void flush() {
    std::fwrite(out_.data(), 1, out_.size(), plain_);
    gzwrite(gz_, out_.data(), unsigned(out_.size()));
    out_.clear();
  }

  std::FILE* plain_;
  gzFile gz_;
  std::string out_;
  int depth_ = 0;
  bool first_ = true;
};

constexpr const char* words[] = {
  "do",    "sys",    "open", "read",  "write", "vfs",   "inode",  "page",   "alloc",  "free",
  "task",  "sched",  "irq",  "mm",    "net",   "sock",  "tcp",    "ip",     "dev",    "init",
  "exit",  "lock",   "get",  "put",   "map",   "unmap", "file",   "dentry", "mount",  "kmem",
  "cache", "slab",   "buf",  "queue", "work",  "timer", "rcu",    "cpu",    "node",   "zone",
  "entry", "fault",  "blk",  "bio",   "ext4",  "xfs",   "usb",    "pci",    "acpi",   "dma",
  "rq",    "cgroup", "bpf",  "perf",  "trace", "event", "kprobe", "clock",  "signal", "pid",
  "cred",  "audit",  "key",  "hash",  "list",  "tree",  "rb",     "xa",     "folio",  "swap"};

/// Names as a kernel's are: two to four words, unique.
class name_maker {
public:
  explicit name_maker(uint32_t seed) : rng_(seed) {}
  std::string operator()() {
    for (;;) {
      std::string name = words[rng_() % std::size(words)];
      for (auto n = 1 + rng_() % 3; n > 0; --n)
        name += std::string("_") + words[rng_() % std::size(words)];
      if (used_.insert(name).second)
        return name;
    }
  }
  std::mt19937& rng() { return rng_; }

private:
  std::mt19937 rng_;
  std::unordered_set<std::string> used_;
};

const char* base_names[] = {"char",
                            "unsigned char",
                            "short",
                            "unsigned short",
                            "int",
                            "unsigned int",
                            "long int",
                            "long unsigned int",
                            "long long int",
                            "_Bool",
                            "long long unsigned int"};

/// A field's or a symbol's type object, of the kinds dwarf2json writes.
void write_type(isf_writer& w, std::mt19937& rng, const std::vector<std::string>& structs) {
  w.open("type");
  switch (rng() % 8) {
    case 0:
    case 1:
    case 2:
      w.value("kind", "base");
      w.value("name", base_names[rng() % std::size(base_names)]);
      break;
    case 3:
    case 4:
      w.value("kind", "pointer");
      w.open("subtype");
      w.value("kind", "struct");
      w.value("name", structs[rng() % structs.size()]);
      w.close();
      break;
    case 5:
      w.value("kind", "array");
      w.value("count", uint64_t(1 + rng() % 64));
      w.open("subtype");
      w.value("kind", "base");
      w.value("name", "char");
      w.close();
      break;
    case 6:
      w.value("kind", "struct");
      w.value("name", structs[rng() % structs.size()]);
      break;
    default:
      w.value("bit_length", uint64_t(1 + rng() % 7));
      w.value("bit_position", uint64_t(rng() % 32));
      w.value("kind", "bitfield");
      w.open("type");
      w.value("kind", "base");
      w.value("name", "unsigned int");
      w.close();
  }
  w.close();
}

struct isf_shape {
  uint32_t symbols = 150000;
  uint32_t user_types = 15000;
  uint32_t enums = 2500;
};

/// A Linux ISF as dwarf2json writes it: keys in Go's order (struct fields as declared, maps
/// sorted), two-space indent; task_struct and pcpu_hot among the types.
void write_isf(const std::string& path, const isf_shape& shape) {
  isf_writer w{path};
  name_maker name{1};
  auto& rng = name.rng();
  std::vector<std::string> structs{"task_struct", "pcpu_hot"};
  while (structs.size() < shape.user_types)
    structs.push_back(name());
  std::vector<std::string> symbols;
  while (symbols.size() < shape.symbols - 3)
    symbols.push_back(name());
  symbols.insert(symbols.end(), {"linux_banner", "entry_SYSCALL_64", "init_task"});
  std::sort(structs.begin(), structs.end());
  std::sort(symbols.begin(), symbols.end());

  w.open("metadata");
  w.open("linux");
  w.open("symbols", '[');
  w.close(']');
  w.close();
  w.open("producer");
  w.value("version", "0.8.0");
  w.value("name", "dwarf2json");
  w.close();
  w.value("format", "6.2.0");
  w.close();

  w.open("base_types");
  for (auto* b : base_names) {
    w.open(b);
    w.value("size", uint64_t(4));
    w.flag("signed", true);
    w.value("kind", "int");
    w.value("endian", "little");
    w.close();
  }
  w.close();

  w.open("user_types");
  for (auto& s : structs) {
    w.open(s);
    // Most structs are small, a few have hundreds of fields (task_struct: ~250).
    uint32_t fields =
      s == "task_struct" ? 250 : 2 + uint32_t(std::exponential_distribution(1.0 / 10)(rng));
    w.value("size", uint64_t(fields * 8));
    w.open("fields");
    std::vector<std::string> names;
    if (s == "task_struct")
      names = {"pid", "tgid", "comm", "real_parent"};
    if (s == "pcpu_hot")
      names = {"current_task"};
    while (names.size() < fields)
      names.push_back(words[rng() % std::size(words)] + std::string("_") +
                      std::to_string(names.size()));
    std::sort(names.begin(), names.end());
    uint64_t offset = 0;
    for (auto& f : names) {
      w.open(f);
      write_type(w, rng, structs);
      w.value("offset", offset);
      offset += 8;
      w.close();
    }
    w.close();
    w.value("kind", rng() % 10 ? "struct" : "union");
    w.close();
  }
  w.close();

  w.open("enums");
  for (uint32_t e = 0; e < shape.enums; ++e) {
    w.open(fmt::format("enum_{}", e));
    w.value("size", uint64_t(4));
    w.value("base", "unsigned int");
    w.open("constants");
    for (uint32_t c = 0, n = 2 + rng() % 12; c < n; ++c)
      w.value(fmt::format("ENUM_{}_VALUE_{}", e, c), uint64_t(c));
    w.close();
    w.close();
  }
  w.close();

  w.open("symbols");
  uint64_t address = 0xffffffff81000000;
  for (auto& s : symbols) {
    w.open(s);
    if (s == "linux_banner") {
      w.open("type");
      w.value("kind", "array");
      w.value("count", uint64_t(64));
      w.close();
      // "Linux version 6.1.0-bench (bench@vmitap) #1 SMP\n\0"
      w.value("constant_data",
              "TGludXggdmVyc2lvbiA2LjEuMC1iZW5jaCAoYmVuY2hAdm1pdGFwKSAjMSBTTVAKAA==");
    } else {
      write_type(w, rng, structs);
    }
    w.value("address", address);
    address += 16 + 16 * (rng() % 64);
    w.close();
  }
  w.close();
}

struct child_run {
  double seconds = 0;
  size_t symbols = 0, offsets = 0;
  long peak_rss_kib = 0;
  bool ok = false;
};

/// This program run again as `--profile-load path`: what it printed.
child_run run_child(const std::string& path) {
  child_run r;
  int out[2];
  if (pipe(out) != 0)
    return r;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, out[0]);
  std::string self = "/proc/self/exe", flag = "--profile-load", file = path;
  char* argv[] = {self.data(), flag.data(), file.data(), nullptr};
  pid_t pid = 0;
  int rc = posix_spawn(&pid, self.c_str(), &actions, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  std::string text;
  char buf[256];
  for (ssize_t n; (n = read(out[0], buf, sizeof buf)) > 0;)
    text.append(buf, size_t(n));
  close(out[0]);
  int status = 0;
  if (rc != 0 || waitpid(pid, &status, 0) != pid)
    return r;
  r.ok = WIFEXITED(status) && WEXITSTATUS(status) == 0 &&
         std::sscanf(text.c_str(), "%lf %zu %zu %ld", &r.seconds, &r.symbols, &r.offsets,
                     &r.peak_rss_kib) == 4;
  return r;
}

/// This process's peak RSS (VmHWM), in KiB. Not wait4's ru_maxrss: Linux folds the spawning
/// process's high-water mark into the child's at exec, which would report the parent's.
long peak_rss_kib() {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  long kib = 0;
  char line[256];
  while (f && std::fgets(line, sizeof line, f))
    if (std::sscanf(line, "VmHWM: %ld kB", &kib) == 1)
      break;
  if (f)
    std::fclose(f);
  return kib;
}

double median(std::vector<double> xs) {
  std::sort(xs.begin(), xs.end());
  return xs.empty() ? 0 : xs[xs.size() / 2];
}

/// `nearest` over `count` generated names: the median of a few misspelled queries, in ms.
double nearest_ms(uint32_t count) {
  drv::kernel_profile p;
  name_maker name{2};
  std::vector<std::string> queries;
  for (uint32_t i = 0; i < count; ++i) {
    auto n = name();
    if (i % (count / 5) == 0)
      queries.push_back(n.substr(0, n.size() - 1) + "x");
    p.symbols.emplace(std::move(n), i);
  }
  std::vector<double> ms;
  for (auto& q : queries) {
    auto t0 = clock_type::now();
    p.nearest(q);
    ms.push_back(std::chrono::duration<double, std::milli>(clock_type::now() - t0).count());
  }
  return median(ms);
}

}  // namespace

int profile_load_child(const std::string& path) {
  auto t0 = clock_type::now();
  auto p = drv::read_profile(path);
  double seconds = std::chrono::duration<double>(clock_type::now() - t0).count();
  if (!p) {
    std::fprintf(stderr, "%s\n", render(p.error()).c_str());
    return 1;
  }
  std::printf("%.6f %zu %zu %ld\n", seconds, p->symbols.size(), p->offsets.size(), peak_rss_kib());
  return 0;
}

profile_load_report profile_load_section() {
  namespace fs = std::filesystem;
  profile_load_report out;
  std::string dir = (fs::temp_directory_path() / "vmitap-bench-profile-XXXXXX").string();
  if (!mkdtemp(dir.data())) {
    out.markdown = "\n## Kernel profile load\n\nNot run: no temporary directory.\n";
    return out;
  }
  isf_shape shape;
  auto path = dir + "/kernel.json";
  auto t0 = clock_type::now();
  write_isf(path, shape);
  write_isf(dir + "/tiny.json", {10, 10, 1});
  std::printf("profile: wrote %s (%.0f MB, %.0f MB gzip) in %.1f s\n", path.c_str(),
              double(fs::file_size(path)) / 1e6, double(fs::file_size(path + ".gz")) / 1e6,
              std::chrono::duration<double>(clock_type::now() - t0).count());
  auto idle = run_child(dir + "/tiny.json");
  out.ok = idle.ok;

  auto& md = out.markdown;
  md = fmt::format(
    "\n## Kernel profile load\n\n"
    "A generated Linux ISF of a distribution kernel's shape as dwarf2json writes it "
    "(two-space indent; {} symbols with their type objects, {} user types with ~12 fields "
    "each, {} enums, base types), read by `read_profile`, which keeps every symbol's "
    "address, the banner and the few offsets vmitap uses. Each read runs in a fresh "
    "process (`vmitap-bench --profile-load FILE`): load is the median of 3 such reads, peak "
    "RSS the highest of their high-water marks (VmHWM), the whole process's ({:.0f} MB of it "
    "is the program itself, reading a profile of 10 symbols). Targets: < 3 s and < 300 MB.\n\n"
    "| file | size | symbols | offsets | load | peak RSS | targets |\n"
    "|---|---:|---:|---:|---:|---:|---|\n",
    shape.symbols, shape.user_types, shape.enums, double(idle.peak_rss_kib) * 1024 / 1e6);
  for (auto [label, file] : {std::pair{"JSON", path}, std::pair{"JSON, gzip", path + ".gz"}}) {
    std::vector<double> seconds;
    child_run last;
    long peak = 0;
    bool ok = true;
    for (int rep = 0; rep < 3; ++rep) {
      last = run_child(file);
      ok &= last.ok && last.symbols == shape.symbols;
      seconds.push_back(last.seconds);
      peak = std::max(peak, last.peak_rss_kib);
    }
    double load = median(seconds);
    double rss_mb = double(peak) * 1024 / 1e6;
    out.ok &= ok;
    bool met = ok && load < 3 && rss_mb < 300;
    std::printf("profile %s: %.3f s, peak RSS %.0f MB, %zu symbols, %zu offsets%s\n", label, load,
                rss_mb, last.symbols, last.offsets, ok ? "" : " FAILED");
    md += fmt::format("| {} | {:.1f} MB | {} | {} | {:.2f} s | {:.0f} MB | {} |\n", label,
                      double(fs::file_size(file)) / 1e6, last.symbols, last.offsets, load, rss_mb,
                      met ? "met" : "**missed**");
  }
  double ms = nearest_ms(300000);
  std::printf("profile: nearest over 300000 symbols %.1f ms\n", ms);
  md += fmt::format(
    "\n\"Did you mean\" (`kernel_profile::nearest`, the 3 closest names by edit distance) over "
    "300000 symbols: {:.1f} ms (median of 5 misspelled names).\n",
    ms);
  std::error_code ignored;
  fs::remove_all(dir, ignored);
  return out;
}

}  // namespace vmitap::bench
