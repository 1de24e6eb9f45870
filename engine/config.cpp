#include "engine/config.hpp"

#include "engine/error.hpp"

#include <toml++/toml.h>

#include <filesystem>
#include <fnmatch.h>
#include <fstream>
#include <set>
#include <sstream>
#include <unistd.h>

namespace vmitap {

namespace {

/// Walks the TOML tree, converts values, and collects every problem with its position.
class reader {
public:
  explicit reader(std::string file) : file_(std::move(file)) {}

  void error(const toml::source_region& where, const std::string& key, const std::string& msg) {
    std::ostringstream out;
    out << file_ << ":" << where.begin.line << ":" << where.begin.column << ": " << key << ": "
        << msg;
    errors_.push_back({where.begin.line, where.begin.column, out.str()});
  }

  /// Unknown keys are errors: a typo must not silently mean "default".
  void allow_only(const toml::table& t, const std::string& path,
                  std::initializer_list<std::string_view> allowed) {
    for (auto&& [k, v] : t) {
      if (std::find(allowed.begin(), allowed.end(), k.str()) != allowed.end())
        continue;
      std::string list;
      for (auto a : allowed)
        list += (list.empty() ? "" : ", ") + std::string(a);
      error(k.source(), join(path, k.str()), "unknown key (expected one of: " + list + ")");
    }
  }

  template <class T>
  std::optional<T> get(const toml::table& t, std::string_view key, const std::string& path,
                       const char* expected) {
    auto* node = t.get(key);
    if (!node)
      return std::nullopt;
    if constexpr (std::is_same_v<T, std::string>) {
      if (auto v = node->value_exact<std::string>())
        return *v;
    } else if constexpr (std::is_same_v<T, bool>) {
      if (auto v = node->value_exact<bool>())
        return *v;
    } else {
      if (auto v = node->value_exact<int64_t>())
        return T(*v);
    }
    error(node->source(), join(path, key), std::string("expected ") + expected);
    return std::nullopt;
  }

  std::optional<uint64_t> get_count(const toml::table& t, std::string_view key,
                                    const std::string& path, int64_t min, int64_t max) {
    auto* node = t.get(key);
    auto v = get<int64_t>(t, key, path, "an integer");
    if (!v)
      return std::nullopt;
    if (*v < min || *v > max) {
      error(node->source(), join(path, key),
            "expected an integer from " + std::to_string(min) + " to " + std::to_string(max)
              + ", got " + std::to_string(*v));
      return std::nullopt;
    }
    return uint64_t(*v);
  }

  std::vector<std::string> get_strings(const toml::table& t, std::string_view key,
                                       const std::string& path) {
    std::vector<std::string> out;
    auto* node = t.get(key);
    if (!node)
      return out;
    auto* arr = node->as_array();
    if (!arr) {
      error(node->source(), join(path, key), "expected an array of strings");
      return out;
    }
    for (size_t i = 0; i < arr->size(); ++i) {
      if (auto s = (*arr)[i].value_exact<std::string>())
        out.push_back(*s);
      else
        error((*arr)[i].source(), join(path, key) + "[" + std::to_string(i) + "]",
              "expected a string");
    }
    return out;
  }

  const toml::table* table(const toml::table& t, std::string_view key, const std::string& path) {
    auto* node = t.get(key);
    if (!node)
      return nullptr;
    if (auto* tbl = node->as_table())
      return tbl;
    error(node->source(), join(path, key), "expected a table");
    return nullptr;
  }

  /// An array of tables ([[key]]); a lone table is not accepted.
  std::vector<const toml::table*> tables(const toml::table& t, std::string_view key,
                                         const std::string& path) {
    std::vector<const toml::table*> out;
    auto* node = t.get(key);
    if (!node)
      return out;
    auto* arr = node->as_array();
    if (!arr || !arr->is_array_of_tables()) {
      error(node->source(), join(path, key), "expected an array of tables ([[" + join(path, key) + "]])");
      return out;
    }
    for (auto& e : *arr)
      out.push_back(e.as_table());
    return out;
  }

  static std::string join(const std::string& path, std::string_view key) {
    return path.empty() ? std::string(key) : path + "." + std::string(key);
  }

  bool ok() const { return errors_.empty(); }
  /// One line per problem, in file order.
  std::string message() {
    std::stable_sort(errors_.begin(), errors_.end(), [](auto& a, auto& b) {
      return std::tie(a.line, a.column) < std::tie(b.line, b.column);
    });
    std::string out;
    for (auto& e : errors_)
      out += (out.empty() ? "" : "\n") + e.text;
    return out;
  }

private:
  struct problem {
    toml::source_index line;
    toml::source_index column;
    std::string text;
  };
  std::string file_;
  std::vector<problem> errors_;
};

std::string indexed(const std::string& key, size_t i) {
  return key + "[" + std::to_string(i) + "]";
}

void read_engine(reader& r, const toml::table& root, config& cfg) {
  if (auto* t = r.table(root, "engine", "")) {
    r.allow_only(*t, "engine", {"driver", "worker_threads", "stop_deadline_seconds",
                                "detached_event_sources"});
    if (auto d = r.get<std::string>(*t, "driver", "engine", "a string: \"sim\" or \"xen\"")) {
      if (*d != "sim" && *d != "xen")
        r.error(t->get("driver")->source(), "engine.driver",
                "expected \"sim\" or \"xen\", got \"" + *d + "\"");
      cfg.driver = *d;
    }
    if (auto n = r.get_count(*t, "worker_threads", "engine", 1, 256))
      cfg.engine.worker_threads = *n;
    if (auto n = r.get_count(*t, "stop_deadline_seconds", "engine", 1, 3600))
      cfg.engine.stop_deadline = std::chrono::seconds(*n);
    if (auto b = r.get<bool>(*t, "detached_event_sources", "engine", "true or false"))
      cfg.engine.detached_event_sources = *b;
  }
  if (auto* t = r.table(root, "metrics", "")) {
    r.allow_only(*t, "metrics", {"listen"});
    if (auto l = r.get<std::string>(*t, "listen", "metrics", "a string \"host:port\" (\"\": off)"))
      cfg.engine.metrics_listen = *l;
  }
}

void read_sinks(reader& r, const toml::table& root, config& cfg) {
  auto* sinks = r.table(root, "sink", "");
  if (!sinks)
    return;
  for (auto&& [name, node] : *sinks) {
    auto path = "sink." + std::string(name.str());
    auto* t = node.as_table();
    if (!t) {
      r.error(node.source(), path, "expected a table ([" + path + "])");
      continue;
    }
    r.allow_only(*t, path, {"type", "path", "rotate_bytes", "queue", "drop"});
    sink_config s;
    s.name = std::string(name.str());
    auto type = r.get<std::string>(*t, "type", path, "a string: \"jsonl\" or \"stdout\"");
    if (!type) {
      if (!t->get("type"))
        r.error(t->source(), path + ".type", "missing (\"jsonl\" or \"stdout\")");
      continue;
    }
    if (*type == "jsonl") {
      s.type = sink_config::kind::jsonl_file;
      auto file = r.get<std::string>(*t, "path", path, "a file path");
      if (!file) {
        if (!t->get("path"))
          r.error(t->source(), path + ".path", "missing: a jsonl sink needs a file path");
        continue;
      }
      s.path = *file;
      auto dir = std::filesystem::path(s.path).parent_path();
      if (dir.empty())
        dir = ".";
      if (!std::filesystem::is_directory(dir) || ::access(dir.c_str(), W_OK) != 0)
        r.error(t->get("path")->source(), path + ".path",
                "directory " + dir.string() + " does not exist or is not writable");
    } else if (*type == "stdout") {
      s.type = sink_config::kind::stdout_lines;
    } else {
      r.error(t->get("type")->source(), path + ".type",
              "expected \"jsonl\" or \"stdout\", got \"" + *type + "\"");
    }
    if (auto n = r.get_count(*t, "rotate_bytes", path, 0, int64_t(1) << 40))
      s.rotate_bytes = *n;
    if (auto n = r.get_count(*t, "queue", path, 1, int64_t(1) << 24))
      s.queue_bound = *n;
    if (auto d = r.get<std::string>(*t, "drop", path, "a string: \"newest\""))
      if (*d != "newest")
        r.error(t->get("drop")->source(), path + ".drop",
                "expected \"newest\" (a full queue drops the new record and counts it)");
    cfg.engine.sinks.push_back(s);
  }
}

void read_sim(reader& r, const toml::table& root, config& cfg) {
  auto* t = r.table(root, "sim", "");
  if (!t)
    return;
  r.allow_only(*t, "sim", {"latency_us", "domain"});
  if (auto n = r.get_count(*t, "latency_us", "sim", 0, 1000000))
    cfg.sim.exit_latency = std::chrono::microseconds(*n);
  std::set<std::string> names;
  auto domains = r.tables(*t, "domain", "sim");
  for (size_t i = 0; i < domains.size(); ++i) {
    auto& d = *domains[i];
    auto path = indexed("sim.domain", i);
    r.allow_only(d, path, {"name", "vcpus", "memory_mib", "instructions", "seed", "functions"});
    sim::domain_config dc;
    if (auto n = r.get<std::string>(d, "name", path, "a string"))
      dc.name = *n;
    else if (!d.get("name"))
      r.error(d.source(), path + ".name", "missing");
    if (!names.insert(dc.name).second)
      r.error(d.get("name")->source(), path + ".name", "duplicate domain name \"" + dc.name + "\"");
    if (auto n = r.get_count(d, "vcpus", path, 1, 128))
      dc.vcpus = uint32_t(*n);
    if (auto n = r.get_count(d, "memory_mib", path, 8, 65536))
      dc.memory_mib = *n;
    if (auto n = r.get_count(d, "instructions", path, 0, int64_t(1) << 50))
      dc.instructions_per_vcpu = *n;
    if (auto n = r.get_count(d, "seed", path, 0, INT64_MAX))
      dc.workload.seed = *n;
    if (auto n = r.get_count(d, "functions", path, 6, 4096))
      dc.workload.functions = uint32_t(*n);
    cfg.sim.domains.push_back(dc);
  }
}

/// The sim domains a selector picks, so addresses can be checked against their memory.
std::vector<const sim::domain_config*> sim_targets(const config& cfg, const domain_selector& s) {
  std::vector<const sim::domain_config*> out;
  for (auto& d : cfg.sim.domains)
    if ((s.name.empty() || s.name == d.name)
        && (s.pattern.empty() || fnmatch(s.pattern.c_str(), d.name.c_str(), 0) == 0))
      out.push_back(&d);
  return out;
}

void read_domains(reader& r, const toml::table& root, config& cfg) {
  std::set<std::string> sink_names;
  for (auto& s : cfg.engine.sinks)
    sink_names.insert(s.name);
  auto domains = r.tables(root, "domain", "");
  for (size_t i = 0; i < domains.size(); ++i) {
    auto& d = *domains[i];
    auto path = indexed("domain", i);
    r.allow_only(d, path, {"name", "id", "pattern", "views", "step", "sinks", "vcpu_views",
                           "breakpoint"});
    engine_config::domain_entry e;
    if (auto n = r.get<std::string>(d, "name", path, "a string"))
      e.select.name = *n;
    if (auto n = r.get_count(d, "id", path, 0, UINT32_MAX))
      e.select.id = drv::domain_id(*n);
    if (auto p = r.get<std::string>(d, "pattern", path, "a glob pattern string"))
      e.select.pattern = *p;
    if (e.select.name.empty() && !e.select.id && e.select.pattern.empty())
      r.error(d.source(), path, "missing a selector: name, id or pattern");
    if (d.get("views")) {
      e.plan.views = r.get_strings(d, "views", path);
      if (e.plan.views.empty())
        r.error(d.get("views")->source(), path + ".views", "expected at least one view name");
      std::set<std::string> seen;
      for (auto& v : e.plan.views)
        if (!seen.insert(v).second)
          r.error(d.get("views")->source(), path + ".views", "duplicate view \"" + v + "\"");
      if (e.plan.views.size() > 9)
        r.error(d.get("views")->source(), path + ".views", "at most 9 views (Xen's altp2m limit)");
    }
    auto declared = [&](const std::string& v) {
      return std::find(e.plan.views.begin(), e.plan.views.end(), v) != e.plan.views.end();
    };
    auto views_list = [&] {
      std::string s;
      for (auto& v : e.plan.views)
        s += (s.empty() ? "" : ", ") + v;
      return s;
    };
    if (auto s = r.get<std::string>(d, "step", path, "a string: \"fast\" or \"classic\"")) {
      if (*s == "fast")
        e.plan.mode = step_mode::fast;
      else if (*s == "classic")
        e.plan.mode = step_mode::classic;
      else
        r.error(d.get("step")->source(), path + ".step",
                "expected \"fast\" or \"classic\", got \"" + *s + "\"");
    }
    e.sinks = r.get_strings(d, "sinks", path);
    for (auto& s : e.sinks)
      if (!sink_names.count(s))
        r.error(d.get("sinks")->source(), path + ".sinks", "no sink named \"" + s + "\"");
    if (auto* vv = r.table(d, "vcpu_views", path)) {
      for (auto&& [k, v] : *vv) {
        auto key = path + ".vcpu_views." + std::string(k.str());
        std::string number{k.str()};
        char* end = nullptr;
        auto id = std::strtoul(number.c_str(), &end, 10);
        auto name = v.value_exact<std::string>();
        if (number.empty() || *end != '\0')
          r.error(k.source(), key, "expected a VCPU number as key");
        else if (!name)
          r.error(v.source(), key, "expected a view name");
        else if (!declared(*name))
          r.error(v.source(), key, "view \"" + *name + "\" is not declared (views: " + views_list() + ")");
        else
          e.plan.vcpu_views[drv::vcpu_id(id)] = *name;
      }
    }
    auto targets = sim_targets(cfg, e.select);
    std::set<std::string> names;
    auto bps = r.tables(d, "breakpoint", path);
    for (size_t j = 0; j < bps.size(); ++j) {
      auto& b = *bps[j];
      auto bpath = path + "." + indexed("breakpoint", j);
      r.allow_only(b, bpath, {"name", "address", "view", "tags"});
      domain_plan::breakpoint bp;
      bp.view = e.plan.views.front();
      if (auto n = r.get<std::string>(b, "name", bpath, "a string"))
        bp.name = *n;
      else if (!b.get("name"))
        r.error(b.source(), bpath + ".name", "missing");
      if (!bp.name.empty() && !names.insert(bp.name).second)
        r.error(b.get("name")->source(), bpath + ".name",
                "duplicate breakpoint name \"" + bp.name + "\" in this domain");
      if (auto a = r.get<int64_t>(b, "address", bpath, "an integer guest physical address")) {
        bp.pa = uint64_t(*a);
        for (auto* t : targets)
          if (*a < 0 || drv::gfn_of(bp.pa) >= t->memory_mib * (1024 * 1024 / drv::page_size))
            r.error(b.get("address")->source(), bpath + ".address",
                    "address is not in guest memory of sim domain \"" + t->name + "\" ("
                      + std::to_string(t->memory_mib) + " MiB)");
      } else if (!b.get("address")) {
        r.error(b.source(), bpath + ".address", "missing");
      }
      if (auto v = r.get<std::string>(b, "view", bpath, "a view name")) {
        bp.view = *v;
        if (!declared(*v))
          r.error(b.get("view")->source(), bpath + ".view",
                  "view \"" + *v + "\" is not declared (views: " + views_list() + ")");
      }
      bp.tags = r.get_strings(b, "tags", bpath);
      e.plan.breakpoints.push_back(std::move(bp));
    }
    cfg.engine.domains.push_back(std::move(e));
  }
}

}  // namespace

caf::expected<config> parse_config(std::string_view text, const std::string& path) {
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
  r.allow_only(root, "", {"engine", "metrics", "sink", "sim", "domain"});
  read_engine(r, root, cfg);
  read_sinks(r, root, cfg);
  read_sim(r, root, cfg);
  read_domains(r, root, cfg);
  if (!r.ok())
    return make_error(ec::config_invalid, r.message());
  return cfg;
}

caf::expected<config> load_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return make_error(ec::config_invalid, path + ": cannot open: " + std::strerror(errno));
  std::stringstream text;
  text << in.rdbuf();
  return parse_config(text.str(), path);
}

std::string describe(const config& cfg) {
  std::ostringstream out;
  out << "config " << cfg.path << ": driver " << cfg.driver << ", " << cfg.engine.worker_threads
      << " worker threads, event sources " << (cfg.engine.detached_event_sources ? "detached" : "scheduled")
      << ", stop deadline " << cfg.engine.stop_deadline.count() / 1000 << " s\n";
  out << "metrics: " << (cfg.engine.metrics_listen.empty() ? "off" : cfg.engine.metrics_listen) << "\n";
  for (auto& s : cfg.engine.sinks)
    out << "sink " << s.name << ": "
        << (s.type == sink_config::kind::jsonl_file ? "jsonl " + s.path : std::string("stdout"))
        << (s.rotate_bytes ? ", rotate at " + std::to_string(s.rotate_bytes) + " bytes" : "")
        << ", queue " << s.queue_bound << ", drops newest when full\n";
  if (cfg.driver == "sim") {
    out << "sim: " << cfg.sim.domains.size() << " domains, exit latency "
        << std::chrono::duration_cast<std::chrono::microseconds>(cfg.sim.exit_latency).count() << " us\n";
    for (auto& d : cfg.sim.domains)
      out << "  sim domain " << d.name << ": " << d.vcpus << " vcpus, " << d.memory_mib
          << " MiB, seed " << d.workload.seed << ", "
          << (d.instructions_per_vcpu ? std::to_string(d.instructions_per_vcpu) + " instructions per vcpu"
                                      : std::string("runs until stopped"))
          << "\n";
  }
  for (auto& e : cfg.engine.domains) {
    out << "domain";
    if (!e.select.name.empty())
      out << " name=" << e.select.name;
    if (e.select.id)
      out << " id=" << *e.select.id;
    if (!e.select.pattern.empty())
      out << " pattern=" << e.select.pattern;
    out << ": supervisor + ept_controller + breakpoint_registry + one vcpu actor per VCPU; step "
        << to_string(e.plan.mode) << "; views";
    for (auto& v : e.plan.views)
      out << " " << v;
    out << "; sinks";
    for (auto& s : e.sinks)
      out << " " << s;
    if (e.sinks.empty())
      out << " (none)";
    out << "\n";
    for (auto& [vcpu, view] : e.plan.vcpu_views)
      out << "  vcpu " << vcpu << " lives in view " << view << "\n";
    for (auto& b : e.plan.breakpoints) {
      char pa[32];
      std::snprintf(pa, sizeof pa, "%#llx", (unsigned long long) b.pa);
      out << "  breakpoint " << b.name << " at " << pa << " in view " << b.view;
      for (auto& t : b.tags)
        out << " #" << t;
      out << "\n";
    }
  }
  return out.str();
}

}  // namespace vmitap
