#include "engine/config_reader.hpp"

#include <algorithm>
#include <sstream>

namespace vmitap {

void config_reader::add(std::vector<problem>& to, const toml::source_region& where,
                        const std::string& key, const std::string& msg) {
  std::ostringstream out;
  out << file_ << ":" << where.begin.line << ":" << where.begin.column << ": " << key << ": "
      << msg;
  to.push_back({where.begin.line, where.begin.column, out.str()});
}

void config_reader::error(const toml::source_region& where, const std::string& key,
                          const std::string& msg) {
  add(errors_, where, key, msg);
}

void config_reader::warning(const toml::source_region& where, const std::string& key,
                            const std::string& msg) {
  add(warnings_, where, key, "warning: " + msg);
}

std::string config_reader::render(std::vector<problem> list) {
  std::stable_sort(list.begin(), list.end(), [](auto& a, auto& b) {
    return std::tie(a.line, a.column) < std::tie(b.line, b.column);
  });
  std::string out;
  for (auto& p : list)
    out += (out.empty() ? "" : "\n") + p.text;
  return out;
}

toml::source_region config_reader::where(const toml::table& t, std::string_view key) {
  if (auto* node = t.get(key))
    return node->source();
  return t.source();
}

void config_reader::allow_only(const toml::table& t, const std::string& path,
                               const std::vector<std::string_view>& allowed) {
  for (auto&& [k, v] : t) {
    if (std::find(allowed.begin(), allowed.end(), k.str()) != allowed.end())
      continue;
    std::string list;
    for (auto a : allowed)
      list += (list.empty() ? "" : ", ") + std::string(a);
    error(k.source(), join(path, k.str()), "unknown key (expected one of: " + list + ")");
  }
}

namespace {

std::string too_long(size_t size, size_t limit) {
  return "longer than " + std::to_string(limit) + " bytes (" + std::to_string(size) +
         "), the limit for " + (limit == defaults::max_name_bytes ? "a name" : "a string");
}

/// A key as a message may quote it: hostile sizes cut.
std::string shown(std::string_view key) {
  constexpr size_t room = 40;
  return key.size() <= room ? std::string(key) : std::string(key.substr(0, room)) + "…";
}

}  // namespace

std::optional<std::string> config_reader::get_string(const toml::table& t, std::string_view key,
                                                     const std::string& path, const char* expected,
                                                     size_t max_bytes) {
  auto* node = t.get(key);
  if (!node)
    return std::nullopt;
  if (auto v = node->value_exact<std::string>()) {
    if (v->size() <= max_bytes)
      return *v;
    error(node->source(), join(path, key), too_long(v->size(), max_bytes));
    return std::nullopt;
  }
  error(node->source(), join(path, key), std::string("expected ") + expected);
  return std::nullopt;
}

bool config_reader::check_sizes(const toml::table& root) {
  auto before = errors_.size();
  // Iterative: a hostile file may nest deeper than a stack should go (toml++ limits it too).
  std::vector<std::pair<const toml::node*, std::string>> todo{{&root, ""}};
  while (!todo.empty()) {
    auto [node, path] = todo.back();
    todo.pop_back();
    if (auto* t = node->as_table()) {
      for (auto&& [k, v] : *t) {
        if (k.str().size() > defaults::max_name_bytes) {
          error(k.source(), join(path, shown(k.str())),
                "key " + too_long(k.str().size(), defaults::max_name_bytes));
          continue;
        }
        todo.emplace_back(&v, join(path, k.str()));
      }
    } else if (auto* a = node->as_array()) {
      for (size_t i = 0; i < a->size(); ++i)
        todo.emplace_back(&(*a)[i], indexed(path, i));
    } else if (auto* s = node->as_string(); s && s->get().size() > defaults::max_string_bytes) {
      error(s->source(), path, too_long(s->get().size(), defaults::max_string_bytes));
    }
  }
  return errors_.size() == before;
}

std::optional<bool> config_reader::get_bool(const toml::table& t, std::string_view key,
                                            const std::string& path) {
  auto* node = t.get(key);
  if (!node)
    return std::nullopt;
  if (auto v = node->value_exact<bool>())
    return *v;
  error(node->source(), join(path, key), "expected true or false");
  return std::nullopt;
}

std::optional<uint64_t> config_reader::get_count(const toml::table& t, std::string_view key,
                                                 const std::string& path, int64_t min,
                                                 int64_t max) {
  auto* node = t.get(key);
  if (!node)
    return std::nullopt;
  auto range = "an integer from " + std::to_string(min) + " to " + std::to_string(max);
  auto v = node->value_exact<int64_t>();
  if (!v) {
    error(node->source(), join(path, key), "expected " + range);
    return std::nullopt;
  }
  if (*v < min || *v > max) {
    error(node->source(), join(path, key), "expected " + range + ", got " + std::to_string(*v));
    return std::nullopt;
  }
  return uint64_t(*v);
}

std::vector<std::string> config_reader::get_strings(const toml::table& t, std::string_view key,
                                                    const std::string& path, bool nonempty) {
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
    if (auto s = (*arr)[i].value_exact<std::string>(); s && s->size() > defaults::max_name_bytes)
      error((*arr)[i].source(), indexed(join(path, key), i),
            too_long(s->size(), defaults::max_name_bytes));
    else if (s)
      out.push_back(*s);
    else
      error((*arr)[i].source(), indexed(join(path, key), i), "expected a string");
  }
  if (nonempty && arr->empty())
    error(node->source(), join(path, key), "expected at least one entry");
  return out;
}

const toml::table* config_reader::table(const toml::table& t, std::string_view key,
                                        const std::string& path) {
  auto* node = t.get(key);
  if (!node)
    return nullptr;
  if (auto* tbl = node->as_table())
    return tbl;
  error(node->source(), join(path, key), "expected a table");
  return nullptr;
}

std::vector<const toml::table*> config_reader::tables(const toml::table& t, std::string_view key,
                                                      const std::string& path) {
  std::vector<const toml::table*> out;
  auto* node = t.get(key);
  if (!node)
    return out;
  auto* arr = node->as_array();
  if (!arr || !arr->is_array_of_tables()) {
    error(node->source(), join(path, key),
          "expected an array of tables ([[" + join(path, key) + "]])");
    return out;
  }
  for (auto& e : *arr)
    out.push_back(e.as_table());
  return out;
}

}  // namespace vmitap
