#include "engine/config.hpp"

#include "drivers/error.hpp"
#include "engine/backends.hpp"
#include "engine/config_breakpoints.hpp"
#include "engine/config_reader.hpp"
#include "engine/listen_address.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

namespace vmitap {

namespace {

namespace fs = std::filesystem;
using reader = config_reader;

void read_engine(reader& r, const toml::table& root, config& cfg) {
  if (auto* t = r.table(root, "engine", "")) {
    r.allow_only(*t, "engine",
                 {"driver", "worker_threads", "pollers", "poller_spin_us", "stop_deadline_seconds",
                  "detached_children"});
    if (auto d = r.get_string(*t, "driver", "engine", "a string naming the driver")) {
      if (!find_backend(*d))
        r.error(reader::where(*t, "driver"), "engine.driver",
                "expected one of " + backend_names() + ", got \"" + *d + "\"");
      else
        cfg.driver = *d;
    }
    if (auto n = r.get_count(*t, "worker_threads", "engine", 1, 256))
      cfg.engine.worker_threads = *n;
    if (auto n = r.get_count(*t, "pollers", "engine", 0, 256))
      cfg.engine.pollers = *n;
    if (auto n = r.get_count(*t, "poller_spin_us", "engine", 0, 100000))
      cfg.engine.poller_spin = std::chrono::microseconds(*n);
    if (auto n = r.get_count(*t, "stop_deadline_seconds", "engine", 1, 3600))
      cfg.engine.stop_deadline = std::chrono::seconds(*n);
    if (auto b = r.get_bool(*t, "detached_children", "engine"))
      cfg.engine.detached_children = *b;
  }
  if (auto* t = r.table(root, "metrics", "")) {
    r.allow_only(*t, "metrics", {"listen"});
    if (auto l = r.get_string(*t, "listen", "metrics", "a string \"host:port\" (\"\": off)")) {
      cfg.engine.metrics_listen = *l;
      if (!l->empty())
        if (auto parsed = parse_listen(*l); !parsed)
          r.error(reader::where(*t, "listen"), "metrics.listen", context_of(parsed.error()));
    }
  }
}

/// A file sink's path must be a file vmitap can create or append to, in a directory it can
/// write (rotation renames in it).
std::optional<std::string> path_problem(const std::string& path) {
  if (path.empty())
    return "must not be empty";
  // Tried, not asked: access() says yes to root for anything a mode allows, but a read-only
  // file system or one like /proc refuses the write itself. Nothing is changed.
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode))
      return "is a directory, not a file";
    int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
      return "exists and is not writable: " + std::string(std::strerror(errno));
    ::close(fd);
  }
  // The nearest directory that exists: vmitap creates the others when it opens the sink.
  auto dir = fs::path(path).parent_path();
  if (dir.empty())
    dir = ".";
  std::error_code ec;
  while (!fs::exists(dir, ec) && dir.has_relative_path())
    dir = dir.parent_path();
  if (dir.empty())
    dir = ".";  // a relative path none of whose directories exist yet
  if (!fs::is_directory(dir, ec))
    return dir.string() + " is not a directory";
  auto probe = (dir / ".vmitap-check-XXXXXX").string();
  int fd = ::mkstemp(probe.data());
  if (fd < 0)
    return "directory " + dir.string() + " is not writable: " + std::strerror(errno);
  ::close(fd);
  ::unlink(probe.c_str());
  return std::nullopt;
}

void read_sinks(reader& r, const toml::table& root, config& cfg) {
  auto* sinks = r.table(root, "sink", "");
  if (!sinks)
    return;
  const toml::source_region* stdout_at = nullptr;
  for (auto&& [name, node] : *sinks) {
    auto path = "sink." + std::string(name.str());
    auto* t = node.as_table();
    if (!t) {
      r.error(node.source(), path, "expected a table ([" + path + "])");
      continue;
    }
    r.allow_only(*t, path,
                 {"type", "path", "rotate_bytes", "rotate_keep", "queue", "queue_bytes", "drop",
                  "flush_interval_ms"});
    sink_config s;
    s.name = std::string(name.str());
    auto type = r.get_string(*t, "type", path, "a string: \"jsonl\" or \"stdout\"");
    if (!type) {
      if (!t->get("type"))
        r.error(t->source(), path + ".type", "missing (\"jsonl\" or \"stdout\")");
      continue;
    }
    if (*type == "jsonl") {
      s.type = sink_config::kind::jsonl_file;
      if (auto file = r.get_string(*t, "path", path, "a file path", defaults::max_string_bytes)) {
        s.path = *file;
        if (auto why = path_problem(s.path))
          r.error(reader::where(*t, "path"), path + ".path", "\"" + s.path + "\" " + *why);
        else if (auto dir = fs::path(s.path).parent_path(); !dir.empty() && !fs::exists(dir))
          r.warning(reader::where(*t, "path"), path + ".path",
                    "directory " + dir.string() +
                      " does not exist yet: vmitap creates it when "
                      "it opens the sink");
      } else if (!t->get("path")) {
        r.error(t->source(), path + ".path", "missing: a jsonl sink needs a file path");
      }
    } else if (*type == "stdout") {
      s.type = sink_config::kind::stdout_lines;
      if (stdout_at)
        r.error(reader::where(*t, "type"), path + ".type",
                "only one sink may write to stdout (the other is at line " +
                  std::to_string(stdout_at->begin.line) + ")");
      stdout_at = &t->source();
      if (t->get("path"))
        r.error(reader::where(*t, "path"), path + ".path", "a stdout sink has no path");
    } else {
      r.error(reader::where(*t, "type"), path + ".type",
              "expected \"jsonl\" or \"stdout\", got \"" + *type + "\"");
    }
    if (auto n = r.get_count(*t, "rotate_bytes", path, 0, int64_t(1) << 40))
      s.rotate_bytes = *n;
    if (auto n = r.get_count(*t, "rotate_keep", path, 0, 1000))
      s.rotate_keep = uint32_t(*n);
    if (auto n = r.get_count(*t, "queue", path, 1, int64_t(1) << 24))
      s.queue_bound = *n;
    if (auto n = r.get_count(*t, "queue_bytes", path, 1 << 20, int64_t(1) << 34))
      s.queue_bytes = *n;
    if (auto n = r.get_count(*t, "flush_interval_ms", path, 1, 60000))
      s.flush_interval = std::chrono::milliseconds(*n);
    if (auto d = r.get_string(*t, "drop", path, "a string: \"newest\""))
      if (*d != "newest")
        r.error(reader::where(*t, "drop"), path + ".drop",
                "expected \"newest\" (a full queue drops the new record and counts it)");
    cfg.engine.sinks.push_back(s);
  }
}

void read_vcpu_views(reader& r, const backend& be, const toml::table& d, const std::string& path,
                     const config& cfg, const engine_config::domain_entry& e, domain_plan& plan) {
  auto* vv = r.table(d, "vcpu_views", path);
  if (!vv)
    return;
  for (auto&& [k, v] : *vv) {
    auto key = path + ".vcpu_views." + std::string(k.str());
    std::string number{k.str()};
    bool digits =
      !number.empty() && number.size() <= 10 &&
      std::all_of(number.begin(), number.end(), [](char c) { return c >= '0' && c <= '9'; });
    auto id = digits ? std::stoull(number) : 0;
    auto name = v.value_exact<std::string>();
    if (!digits || id > UINT32_MAX) {
      r.error(k.source(), key, "expected a VCPU number (0 to 4294967295) as key");
    } else if (!name) {
      r.error(v.source(), key, "expected a view name");
    } else if (std::find(plan.views.begin(), plan.views.end(), *name) == plan.views.end()) {
      r.error(v.source(), key, "view \"" + *name + "\" is not declared");
    } else {
      for (auto& why : be.check_vcpu(cfg, e.select, drv::vcpu_id(id)))
        r.error(k.source(), key, why);
      plan.vcpu_views[drv::vcpu_id(id)] = *name;
    }
  }
}

/// An earlier entry that selects a domain `e` selects too, and which: one the host will
/// have (when the backend knows them), or a name a pattern or an equal selector gives away.
std::optional<std::pair<const engine_config::domain_entry*, std::string>> overlapping(
  const std::vector<engine_config::domain_entry>& earlier, const engine_config::domain_entry& e,
  const std::optional<std::vector<drv::domain_info>>& known) {
  auto& a = e.select;
  for (auto& other : earlier) {
    auto& b = other.select;
    if (known)
      for (auto& k : *known)
        if (a.matches(k) && b.matches(k))
          return std::pair{&other, "domain \"" + k.name + "\""};
    auto name_in = [](const domain_selector& named, const domain_selector& s) {
      drv::domain_info d;
      d.name = named.name;
      return !named.name.empty() && !s.id && s.matches(d);
    };
    if (name_in(a, b) || name_in(b, a))
      return std::pair{&other, "domain \"" + (a.name.empty() ? b.name : a.name) + "\""};
    if ((a.id && b.id && *a.id == *b.id) || (!a.pattern.empty() && a.pattern == b.pattern))
      return std::pair{&other, "the same domains"};
  }
  return std::nullopt;
}

/// `os` and `profile` go together: the kernel's symbol table and the kind it must be. The
/// profile is read now, so that `check` reports a bad one and a missing symbol.
/// A profile ships beside its config: a relative path is the config's directory's.
std::shared_ptr<const drv::kernel_profile> read_domain_kernel(reader& r, const toml::table& d,
                                                              const std::string& path,
                                                              const std::string& base_dir) {
  auto os_name = r.get_string(d, "os", path, "a string: \"linux\" or \"windows\"");
  auto file = r.get_string(d, "profile", path, "a file path", defaults::max_string_bytes);
  std::optional<drv::kernel_os> os;
  if (os_name) {
    os = drv::kernel_os_from(*os_name);
    if (!os)
      r.error(reader::where(d, "os"), path + ".os",
              "expected \"linux\" or \"windows\", got \"" + *os_name + "\"");
  }
  if (bool(d.get("os")) != bool(d.get("profile"))) {
    auto given = d.get("os") ? "os" : "profile";
    r.error(reader::where(d, given), path + "." + given,
            "os and profile go together: the kernel's kind and its symbol table (a Volatility 3 "
            "ISF file)");
    return nullptr;
  }
  if (!file)
    return nullptr;
  auto full = fs::path(*file).is_relative() ? (fs::path(base_dir) / *file).lexically_normal()
                                            : fs::path(*file);
  auto profile = drv::read_profile(full.string());
  if (!profile) {
    r.error(reader::where(d, "profile"), path + ".profile", render(profile.error()));
    return nullptr;
  }
  if (os && profile->os != *os) {
    r.error(reader::where(d, "profile"), path + ".profile",
            *file + " is a " + drv::to_string(profile->os) + " kernel's profile, the domain says " +
              "os = \"" + drv::to_string(*os) + "\"");
    return nullptr;
  }
  return std::make_shared<const drv::kernel_profile>(std::move(*profile));
}

void read_domains(reader& r, const toml::table& root, config& cfg, const handler_registry* handlers,
                  const std::string& base_dir) {
  auto& be = *find_backend(cfg.driver);
  std::set<std::string> sink_names;
  for (auto& s : cfg.engine.sinks)
    sink_names.insert(s.name);
  auto known = be.known_domains(cfg);
  auto domains = r.tables(root, "domain", "");
  for (size_t i = 0; i < domains.size(); ++i) {
    auto& d = *domains[i];
    auto path = reader::indexed("domain", i);
    r.allow_only(d, path,
                 {"name", "id", "pattern", "views", "step", "abi", "os", "profile", "processes",
                  "sinks", "vcpu_views", "breakpoint"});
    engine_config::domain_entry e;
    auto plan = std::make_shared<domain_plan>();
    if (auto n = r.get_string(d, "name", path, "a string"))
      e.select.name = *n;
    if (auto n = r.get_count(d, "id", path, 0, UINT32_MAX))
      e.select.id = drv::domain_id(*n);
    if (auto p = r.get_string(d, "pattern", path, "a glob pattern string"))
      e.select.pattern = *p;
    e.line = uint32_t(d.source().begin.line);
    int selectors = !e.select.name.empty() + bool(e.select.id) + !e.select.pattern.empty();
    if (selectors == 0)
      r.error(d.source(), path, "missing a selector: name, id or pattern");
    else if (selectors > 1)
      r.error(d.source(), path,
              "selects by " + e.select.describe() + ": give one of name, id or pattern");
    else if (known && std::none_of(known->begin(), known->end(),
                                   [&](auto& k) { return e.select.matches(k); }))
      r.warning(d.source(), path,
                e.select.describe() + " selects no domain of the " + be.name +
                  " host (it is attached if one starts later)");
    if (d.get("views")) {
      auto views = r.get_strings(d, "views", path, true);
      std::set<std::string> seen;
      for (auto& v : views)
        if (v.empty() || !seen.insert(v).second)
          r.error(reader::where(d, "views"), path + ".views",
                  v.empty() ? "a view name must not be empty" : "duplicate view \"" + v + "\"");
      if (views.size() > drv::max_views - 1)
        r.error(reader::where(d, "views"), path + ".views",
                "at most " + std::to_string(drv::max_views - 1) + " views (Xen's altp2m limit)");
      if (!views.empty())
        plan->views = std::move(views);  // else reported; keep the default to go on checking
    }
    if (auto s = r.get_string(d, "step", path, "a string: \"fast\", \"classic\" or \"emulate\"")) {
      plan->mode_chosen = true;
      if (*s == "fast")
        plan->mode = step_mode::fast;
      else if (*s == "classic")
        plan->mode = step_mode::classic;
      else if (*s == "emulate")
        plan->mode = step_mode::emulate;
      else
        r.error(reader::where(d, "step"), path + ".step",
                "expected \"fast\", \"classic\" or \"emulate\", got \"" + *s + "\"");
    }
    auto cc = drv::calling_convention::sysv;
    if (auto a = r.get_string(d, "abi", path, "a string: \"sysv\" or \"ms-x64\"")) {
      if (auto parsed = drv::calling_convention_from(*a))
        cc = *parsed;
      else
        r.error(reader::where(d, "abi"), path + ".abi",
                "expected \"sysv\" (Linux) or \"ms-x64\" (Windows), got \"" + *a + "\"");
    }
    plan->profile = read_domain_kernel(r, d, path, base_dir);
    std::vector<std::string> processes;
    if (d.get("processes")) {
      processes = r.get_strings(d, "processes", path, true);
      if (!d.get("profile"))
        r.error(reader::where(d, "processes"), path + ".processes",
                "needs a profile (a hit's process is read through the kernel's structures)");
    }
    e.sinks = r.get_strings(d, "sinks", path);
    for (auto& s : e.sinks)
      if (!sink_names.count(s))
        r.error(reader::where(d, "sinks"), path + ".sinks", "no sink named \"" + s + "\"");
    read_vcpu_views(r, be, d, path, cfg, e, *plan);
    auto check = [&](uint64_t pa) { return be.check_address(cfg, e.select, pa); };
    bool profile_failed = d.get("profile") && !plan->profile;
    plan->breakpoints = read_breakpoints(r, d, path,
                                         {plan->views, cc, handlers, check, plan->profile.get(),
                                          profile_failed, std::move(processes)});
    if (e.sinks.empty() && !d.get("sinks"))
      r.warning(d.source(), path, "no sinks: its hits are counted in the metrics, not recorded");
    e.plan = std::move(plan);
    if (auto other = overlapping(cfg.engine.domains, e, known))
      r.error(d.source(), path,
              "selects " + other->second + " as the entry at line " +
                std::to_string(other->first->line) + " does (" + other->first->select.describe() +
                "): a domain must match exactly one [[domain]] entry");
    cfg.engine.domains.push_back(std::move(e));
  }
}

}  // namespace

namespace {

/// Where a byte outside ASCII stands outside a string and a comment (TOML allows one only
/// inside them; toml++ 3.3.0 reaches undefined behaviour on one in a bare key, its bug 295),
/// as "line:column" (columns count characters); empty if none does.
std::string non_ascii_outside_strings(std::string_view text) {
  if (text.starts_with("\xEF\xBB\xBF"))
    text.remove_prefix(3);  // a UTF-8 byte order mark, as some editors save: toml++ skips it
  size_t line = 1, column = 0;
  auto at = [&](std::string_view s, size_t i) { return i < s.size() ? s[i] : '\0'; };
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if ((uint8_t(c) & 0xc0) != 0x80)
      ++column;
    if (c == '\n') {
      ++line;
      column = 0;
    } else if (c == '#') {
      while (i + 1 < text.size() && text[i + 1] != '\n')
        ++i;
    } else if (c == '"' || c == '\'') {
      // Skip the string (multi-line when the quote is tripled); escapes only in "…".
      bool multi = at(text, i + 1) == c && at(text, i + 2) == c;
      size_t j = i + (multi ? 3 : 1);
      for (; j < text.size(); ++j) {
        if (c == '"' && text[j] == '\\') {
          ++j;
        } else if (text[j] == '\n') {
          if (!multi)
            break;  // an unterminated string: toml++ says where
          ++line;
          column = 0;
        } else if (text[j] == c && (!multi || (at(text, j + 1) == c && at(text, j + 2) == c))) {
          // A run of 4 or 5 quotes: the content ends with the first ones, the last 3 close.
          while (multi && at(text, j + 1) == c)
            ++j;
          break;
        } else if ((uint8_t(text[j]) & 0xc0) != 0x80) {
          ++column;
        }
      }
      i = j;
      if (i < text.size() && text[i] == '\n') {
        ++line;
        column = 0;
      }
    } else if (uint8_t(c) >= 0x80) {
      return std::to_string(line) + ":" + std::to_string(column);
    }
  }
  return {};
}

}  // namespace

namespace {

enum class config_part : uint8_t { whole, host };

caf::expected<config> parse(std::string_view text, const std::string& path,
                            const handler_registry* handlers, config_part part,
                            const std::string& base_dir) {
  if (auto where = non_ascii_outside_strings(text); !where.empty())
    return make_error(ec::config_invalid,
                      path + ":" + where +
                        ": syntax: a character outside ASCII outside a string: bare keys are "
                        "A-Z a-z 0-9 _ - (quote a key that needs others)");
  toml::table root;
  try {
    root = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    std::ostringstream out;
    out << path << ":" << e.source().begin.line << ":" << e.source().begin.column
        << ": syntax: " << e.description();
    return make_error(ec::config_invalid, out.str());
  }
  config cfg;
  cfg.path = path;
  reader r{path};
  if (!r.check_sizes(root))
    return make_error(ec::config_invalid, r.errors());
  std::vector<std::string_view> sections = {"engine", "metrics", "sink", "domain"};
  for (auto& b : backends())
    sections.push_back(b.name);
  r.allow_only(root, "", sections);
  read_engine(r, root, cfg);
  read_sinks(r, root, cfg);
  for (auto& b : backends())
    if (root.get(b.name) && cfg.driver != b.name)
      r.error(root.get(b.name)->source(), b.name,
              "a [" + b.name + "] section, but the driver is \"" + cfg.driver + "\"");
  find_backend(cfg.driver)->read_section(r, r.table(root, cfg.driver, ""), cfg);
  if (part == config_part::host) {
    if (!r.ok())
      return make_error(ec::config_invalid, r.errors());
    return cfg;
  }
  read_domains(r, root, cfg, handlers,
               base_dir.empty() ? fs::path(path).parent_path().string() : base_dir);
  if (cfg.engine.domains.empty() && !root.get("domain"))
    r.warning(root.source(), "domain", "no [[domain]]: nothing will be monitored");
  if (!r.ok())
    return make_error(ec::config_invalid, r.errors());
  cfg.warnings = r.warnings();
  return cfg;
}

caf::expected<std::string> read_config_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    return make_error(ec::config_invalid, path + ": cannot open: " + std::strerror(errno));
  if (S_ISDIR(st.st_mode))
    return make_error(ec::config_invalid, path + ": is a directory, not a config file");
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return make_error(ec::config_invalid, path + ": cannot open: " + std::strerror(errno));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

caf::expected<config> parse_config(std::string_view text, const std::string& path,
                                   const handler_registry* handlers, const std::string& base_dir) {
  return parse(text, path, handlers, config_part::whole, base_dir);
}

caf::expected<config> parse_host_config(std::string_view text, const std::string& path) {
  return parse(text, path, nullptr, config_part::host, {});
}

caf::expected<config> load_config(const std::string& path, const handler_registry* handlers) {
  auto text = read_config_file(path);
  if (!text)
    return std::move(text.error());
  return parse_config(*text, path, handlers);
}

caf::expected<config> load_host_config(const std::string& path) {
  auto text = read_config_file(path);
  if (!text)
    return std::move(text.error());
  return parse_host_config(*text, path);
}

}  // namespace vmitap
