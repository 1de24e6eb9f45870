#pragma once

// Walks a TOML tree, converts values and collects every problem with its position:
// "file:line:column: key: what was expected". Unknown keys are errors (a typo must not
// silently mean "default"). Warnings (a selector that matches nothing) are kept apart.

#include "drivers/defaults.hpp"

#include <toml++/toml.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace vmitap {

class config_reader {
public:
  explicit config_reader(std::string file) : file_(std::move(file)) {}

  void error(const toml::source_region& where, const std::string& key, const std::string& msg);
  void warning(const toml::source_region& where, const std::string& key, const std::string& msg);

  void allow_only(const toml::table& t, const std::string& path,
                  const std::vector<std::string_view>& allowed);

  /// A string of at most `max_bytes` (by default a name's limit).
  std::optional<std::string> get_string(const toml::table& t, std::string_view key,
                                        const std::string& path, const char* expected,
                                        size_t max_bytes = defaults::max_name_bytes);
  std::optional<bool> get_bool(const toml::table& t, std::string_view key, const std::string& path);
  /// An integer in [min, max]; anything else is an error naming the range.
  std::optional<uint64_t> get_count(const toml::table& t, std::string_view key,
                                    const std::string& path, int64_t min, int64_t max);
  /// An array of strings, each a name (at most max_name_bytes); `nonempty` makes an empty
  /// array an error.
  std::vector<std::string> get_strings(const toml::table& t, std::string_view key,
                                       const std::string& path, bool nonempty = false);
  /// A table, or an error if the key holds something else.
  const toml::table* table(const toml::table& t, std::string_view key, const std::string& path);
  /// An array of tables ([[key]]); a lone table or an array of anything else is an error.
  std::vector<const toml::table*> tables(const toml::table& t, std::string_view key,
                                         const std::string& path);
  /// Every key in the tree at most max_name_bytes, every string at most max_string_bytes:
  /// checked before anything is read, so no message echoes a hostile size. False if not.
  bool check_sizes(const toml::table& root);
  /// The position to report a key's problem at: the value if present, else the table.
  static toml::source_region where(const toml::table& t, std::string_view key);

  static std::string join(const std::string& path, std::string_view key) {
    return path.empty() ? std::string(key) : path + "." + std::string(key);
  }
  static std::string indexed(const std::string& key, size_t i) {
    return key + "[" + std::to_string(i) + "]";
  }

  bool ok() const { return errors_.empty(); }
  /// One line per error, in file order.
  std::string errors() const { return render(errors_); }
  std::string warnings() const { return render(warnings_); }

private:
  struct problem {
    toml::source_index line;
    toml::source_index column;
    std::string text;
  };
  void add(std::vector<problem>& to, const toml::source_region& where, const std::string& key,
           const std::string& msg);
  static std::string render(std::vector<problem> list);

  std::string file_;
  std::vector<problem> errors_;
  std::vector<problem> warnings_;
};

}  // namespace vmitap
