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

std::optional<std::string> config_reader::get_string(const toml::table& t, std::string_view key,
                                                     const std::string& path,
                                                     const char* expected) {
  auto* node = t.get(key);
  if (!node)
    return std::nullopt;
  if (auto v = node->value_exact<std::string>())
    return *v;
  error(node->source(), join(path, key), std::string("expected ") + expected);
  return std::nullopt;
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
    if (auto s = (*arr)[i].value_exact<std::string>())
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
