#include "drivers/guest/profile.hpp"

#include "drivers/error.hpp"
#include "drivers/guest/compressed_input.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <istream>
#include <limits>

namespace vmitap::drv {

namespace {

constexpr size_t max_depth = 64;
// No ISF string comes near this (the banner is ~200 bytes); nlohmann's lexer buffers a whole
// string, and the bytes between two strings, before it reports them.
constexpr size_t max_run = size_t{1} << 20;

constexpr field_ref linux_fields[] = {
  {"task_struct", "pid"},         {"task_struct", "tgid"},      {"task_struct", "comm"},
  {"task_struct", "real_parent"}, {"pcpu_hot", "current_task"},
};
constexpr field_ref windows_fields[] = {
  {"_KPCR", "Prcb"},
  {"_KPRCB", "CurrentThread"},
  {"_KTHREAD", "Process"},
  {"_ETHREAD", "Cid"},
  {"_CLIENT_ID", "UniqueThread"},
  {"_EPROCESS", "UniqueProcessId"},
  {"_EPROCESS", "ImageFileName"},
  {"_EPROCESS", "InheritedFromUniqueProcessId"},
};

std::span<const field_ref> fields_of(kernel_os os) {
  if (os == kernel_os::linux_kernel)
    return linux_fields;
  return windows_fields;
}

// The OS is in `metadata`, which may come after `user_types`: both OSes' fields are read.
bool used_by_either(std::string_view type, std::string_view field = {}) {
  for (auto os : {kernel_os::linux_kernel, kernel_os::windows_kernel})
    for (auto& f : fields_of(os))
      if (f.type == type && (field.empty() || f.field == field))
        return true;
  return false;
}

/// A JSON string (valid UTF-8) in quotes, cut short at a character boundary.
std::string in_quotes(std::string_view s) {
  size_t shown = std::min<size_t>(s.size(), 40);
  while (shown < s.size() && shown > 0 && (uint8_t(s[shown]) & 0xc0) == 0x80)
    --shown;
  return "\"" + std::string(s.substr(0, shown)) + (shown < s.size() ? "…\"" : "\"");
}

/// nlohmann quotes the last bytes it read as they are, valid UTF-8 or not; a message must be
/// (a JSON log line carries nothing else), so every byte past ASCII is written as \xNN.
std::string ascii(std::string_view s) {
  constexpr char hex[] = "0123456789abcdef";
  std::string out;
  for (char c : s) {
    auto b = uint8_t(c);
    if (b < 0x80)
      out += c;
    else
      out.append({'\\', 'x', hex[b >> 4], hex[b & 15]});
  }
  return out;
}

std::optional<std::string> decode_base64(std::string_view text) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z')
      return c - 'A';
    if (c >= 'a' && c <= 'z')
      return c - 'a' + 26;
    if (c >= '0' && c <= '9')
      return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
  };
  while (text.ends_with('='))
    text.remove_suffix(1);
  if (text.size() % 4 == 1)
    return std::nullopt;
  std::string out;
  out.reserve(text.size() * 3 / 4);
  uint32_t bits = 0;
  int held = 0;
  for (char c : text) {
    int v = value(c);
    if (v < 0)
      return std::nullopt;
    bits = (bits << 6) | uint32_t(v);
    held += 6;
    if (held >= 8) {
      held -= 8;
      out.push_back(char((bits >> held) & 0xff));
    }
  }
  return out;
}

/// Bounds what nlohmann's lexer buffers before the reader sees it: a string longer than
/// max_run, or more than max_run bytes between two strings (whitespace, a number), ends the
/// input there. Tracks only quotes and backslashes.
class length_guard {
public:
  enum class overlong : uint8_t { none, string, between };

  /// How many bytes of `chunk` are within bounds: all, unless tripped() after the call.
  size_t scan(std::string_view chunk) {
    const char* p = chunk.data();
    size_t n = chunk.size();
    for (size_t i = 0; i < n;) {
      size_t j = i;
      if (in_string_) {
        if (escaped_) {
          escaped_ = false;
          ++j;
        }
        while (j < n && p[j] != '"' && p[j] != '\\')
          ++j;
      } else {
        auto* q = static_cast<const char*>(std::memchr(p + j, '"', n - j));
        j = q ? size_t(q - p) : n;
      }
      run_ += j - i;
      if (run_ > max_run) {
        tripped_ = in_string_ ? overlong::string : overlong::between;
        return i;
      }
      if (j == n)
        return n;
      if (p[j] == '\\') {
        escaped_ = true;
        ++run_;
      } else {
        in_string_ = !in_string_;
        run_ = 0;
      }
      i = j + 1;
    }
    return n;
  }

  overlong tripped() const { return tripped_; }

private:
  bool in_string_ = false;
  bool escaped_ = false;
  size_t run_ = 0;
  overlong tripped_ = overlong::none;
};

/// The decompressed bytes as a stream for nlohmann's lexer, which reads its get area with
/// sbumpc (inline until a chunk is used up): the chunks are served in place, never copied.
class json_input : public std::streambuf {
public:
  explicit json_input(compressed_input& source) : source_(source) {}

  const length_guard& guard() const { return guard_; }
  /// Bytes served so far.
  uint64_t served() const { return served_; }
  /// Bytes the parser has read.
  uint64_t consumed() const { return served_ - uint64_t(egptr() - gptr()); }
  /// True if nothing follows what the parser read (it stops at a NUL byte, which it takes
  /// for the end of a C string).
  bool drained() {
    if (gptr() != egptr())
      return false;
    return underflow() == traits_type::eof();
  }

protected:
  int_type underflow() override {
    if (guard_.tripped() != length_guard::overlong::none)
      return traits_type::eof();
    auto chunk = source_.next();
    size_t keep = guard_.scan(chunk);
    served_ += keep;
    if (keep == 0)
      return traits_type::eof();
    // The get area is only read: nlohmann ungets by itself, never through the buffer.
    char* p = const_cast<char*>(chunk.data());
    setg(p, p, p + keep);
    return traits_type::to_int_type(*p);
  }

private:
  compressed_input& source_;
  length_guard guard_;
  uint64_t served_ = 0;
};

/// What a key's value (or the top-level value) is to the reader.
enum class slot : uint8_t {
  skip,  ///< anything: not read
  // Objects. base_types and enums are only required, their contents not read.
  root,
  metadata,
  linux_os,
  windows_os,
  pdb,
  symbols,
  symbol,
  user_types,
  user_type,
  fields,
  field,
  base_types,
  enums,
  // Values kept.
  format,
  guid,
  database,
  age,
  address,
  banner,
  offset,
};

bool is_object(slot s) {
  return s >= slot::root && s <= slot::enums;
}

const char* expectation(slot s) {
  switch (s) {
    case slot::format:
    case slot::guid:
    case slot::database:
    case slot::banner:
      return "expected a string";
    case slot::age:
      return "expected an unsigned 32-bit integer";
    case slot::address:
    case slot::offset:
      return "expected an unsigned integer";
    default:
      return "expected an object";
  }
}

/// The SAX handler: keeps what kernel_profile holds, checks the types of what it keeps and
/// skips the rest. One frame per open object or array; each frame's key is a string reused
/// for the whole parse, so skipping allocates nothing once the frames have grown.
class isf_reader final : public nlohmann::json_sax<nlohmann::json> {
public:
  explicit isf_reader(kernel_profile& out) : out_(out) {}

  bool null() override { return other_value(); }
  bool boolean(bool) override { return other_value(); }
  bool number_integer(number_integer_t) override { return other_value(); }
  bool number_float(number_float_t, const string_t&) override { return other_value(); }
  bool binary(binary_t&) override { return other_value(); }

  bool number_unsigned(number_unsigned_t v) override {
    switch (here()) {
      case slot::address:
        out_.symbols.insert_or_assign(frames_[1].key, v);
        break;
      case slot::offset:
        out_.offsets.insert_or_assign(frames_[1].key + "." + frames_[3].key, v);
        break;
      case slot::age:
        if (v > std::numeric_limits<uint32_t>::max())
          return fail(expectation(slot::age));
        pdb_.age = uint32_t(v);
        seen(slot::age);
        break;
      case slot::skip:
        break;
      default:
        return wrong_type();
    }
    return value_done();
  }

  bool string(string_t& v) override {
    switch (here()) {
      case slot::format:
        if (!v.starts_with("6."))
          return fail(in_quotes(v) + " is not ISF format 6.x");
        out_.format = v;
        seen(slot::format);
        break;
      case slot::guid:
        pdb_.guid = v;
        seen(slot::guid);
        break;
      case slot::database:
        pdb_.database = v;
        seen(slot::database);
        break;
      case slot::banner: {
        auto bytes = decode_base64(v);
        if (!bytes)
          return fail("not valid base64");
        if (bytes->ends_with('\0'))
          bytes->pop_back();
        out_.banner = std::move(*bytes);
        break;
      }
      case slot::skip:
        break;
      default:
        return wrong_type();
    }
    return value_done();
  }

  bool start_object(std::size_t) override { return open(false); }
  bool start_array(std::size_t) override { return open(true); }

  bool key(string_t& k) override {
    auto& f = frames_[depth_ - 1];
    f.key.assign(k);
    f.has_key = true;
    f.next = slot_of(f.kind, k);
    return true;
  }

  bool end_object() override {
    if (frames_[depth_ - 1].kind == slot::pdb) {
      for (auto [s, name] : {std::pair{slot::guid, "GUID"}, std::pair{slot::age, "age"},
                             std::pair{slot::database, "database"}})
        if (!has(s))
          return fail("missing key \"" + std::string(name) + "\"");
      out_.pdb = pdb_;
    }
    --depth_;
    return value_done();
  }

  bool end_array() override {
    --depth_;
    return value_done();
  }

  bool parse_error(std::size_t position, const std::string&,
                   const nlohmann::detail::exception& ex) override {
    // "[json.exception.parse_error.101] parse error at line 1, column 2: what": keep `what`.
    std::string_view what = ex.what();
    if (auto at = what.find(": ", what.find("parse error")); at != std::string_view::npos)
      what.remove_prefix(at + 2);
    invalid_json_ = at_key("invalid JSON at byte " + std::to_string(position) + ": " + ascii(what));
    return false;
  }

  /// What the reader found wrong, with the key it was reading ("symbols.foo.address: …").
  const std::string& error() const { return error_; }
  /// What nlohmann found wrong, with the key and the byte offset.
  const std::string& invalid_json() const { return invalid_json_; }
  /// Where the reader is: the keys (and array indices) of the open values.
  std::string key_path() const {
    std::string path;
    for (size_t i = 0; i < depth_; ++i) {
      auto& f = frames_[i];
      if (f.array) {
        path += "[" + std::to_string(f.index) + "]";
      } else if (f.has_key) {
        if (!path.empty())
          path += '.';
        path += f.key;
      }
    }
    return path;
  }
  /// `what`, after the key path if there is one.
  std::string at_key(std::string what) const {
    auto path = key_path();
    return path.empty() ? what : path + ": " + what;
  }
  /// After a successful parse: the keys ISF 6 always has, the first one missing.
  std::optional<std::string> missing() const {
    for (auto [s, name] :
         {std::pair{slot::metadata, "metadata"}, std::pair{slot::format, "metadata.format"},
          std::pair{slot::linux_os, "metadata.linux\" or \"metadata.windows"},
          std::pair{slot::symbols, "symbols"}, std::pair{slot::user_types, "user_types"},
          std::pair{slot::base_types, "base_types"}})
      if (!has(s) && !(s == slot::linux_os && has(slot::windows_os)))
        return name;
    return std::nullopt;
  }

private:
  struct frame {
    slot kind = slot::skip;
    bool array = false;
    bool has_key = false;  ///< an object whose current key's value is being read
    slot next = slot::skip;
    size_t index = 0;  ///< an array: the element being read
    std::string key;
  };

  bool fail(std::string what) {
    error_ = at_key(std::move(what));
    return false;
  }

  void seen(slot s) { seen_ |= uint32_t{1} << unsigned(s); }
  bool has(slot s) const { return seen_ & (uint32_t{1} << unsigned(s)); }

  slot here() const {
    if (depth_ == 0)
      return slot::root;
    auto& f = frames_[depth_ - 1];
    return f.array ? slot::skip : f.next;
  }

  slot slot_of(slot parent, std::string_view k) const {
    switch (parent) {
      case slot::root:
        return k == "metadata"     ? slot::metadata
               : k == "symbols"    ? slot::symbols
               : k == "user_types" ? slot::user_types
               : k == "base_types" ? slot::base_types
               : k == "enums"      ? slot::enums
                                   : slot::skip;
      case slot::metadata:
        return k == "format"    ? slot::format
               : k == "linux"   ? slot::linux_os
               : k == "windows" ? slot::windows_os
                                : slot::skip;
      case slot::windows_os:
        return k == "pdb" ? slot::pdb : slot::skip;
      case slot::pdb:
        return k == "GUID"       ? slot::guid
               : k == "age"      ? slot::age
               : k == "database" ? slot::database
                                 : slot::skip;
      case slot::symbols:
        return slot::symbol;
      case slot::symbol:
        if (k == "address")
          return slot::address;
        return k == "constant_data" && frames_[1].key == "linux_banner" ? slot::banner : slot::skip;
      case slot::user_types:
        return used_by_either(k) ? slot::user_type : slot::skip;
      case slot::user_type:
        return k == "fields" ? slot::fields : slot::skip;
      case slot::fields:
        return used_by_either(frames_[1].key, k) ? slot::field : slot::skip;
      case slot::field:
        return k == "offset" ? slot::offset : slot::skip;
      default:
        return slot::skip;
    }
  }

  bool open(bool array) {
    auto s = here();
    if (s != slot::skip && (array || !is_object(s)))
      return wrong_type();
    if (depth_ == max_depth)
      return fail("nested deeper than " + std::to_string(max_depth));
    if (s == slot::linux_os || s == slot::windows_os) {
      auto other = s == slot::linux_os ? slot::windows_os : slot::linux_os;
      if (has(other))
        return fail("a profile is of one OS: metadata has both \"linux\" and \"windows\"");
      out_.os = s == slot::linux_os ? kernel_os::linux_kernel : kernel_os::windows_kernel;
    }
    if (s == slot::pdb)
      for (auto k : {slot::guid, slot::age, slot::database})
        seen_ &= ~(uint32_t{1} << unsigned(k));
    seen(s);
    if (depth_ == frames_.size())
      frames_.emplace_back();
    auto& f = frames_[depth_++];
    f.kind = s;
    f.array = array;
    f.has_key = false;
    f.next = slot::skip;
    f.index = 0;
    return true;
  }

  bool other_value() { return here() == slot::skip ? value_done() : wrong_type(); }

  bool wrong_type() {
    auto s = here();
    return fail(s == slot::root ? "expected a JSON object at the top level" : expectation(s));
  }

  bool value_done() {
    if (depth_ > 0) {
      auto& f = frames_[depth_ - 1];
      if (f.array)
        ++f.index;
      else
        f.has_key = false;
    }
    return true;
  }

  kernel_profile& out_;
  std::vector<frame> frames_;
  size_t depth_ = 0;
  uint32_t seen_ = 0;
  pdb_identity pdb_;
  std::string error_;
  std::string invalid_json_;
};

caf::expected<kernel_profile> read_isf(compressed_input& source, const std::string& path) {
  kernel_profile profile;
  profile.path = path;
  json_input buffer{source};
  std::istream stream{&buffer};
  isf_reader reader{profile};
  bool parsed = nlohmann::json::sax_parse(stream, &reader);
  uint64_t end = buffer.consumed();
  bool drained = parsed && buffer.drained();
  auto invalid = [&](const std::string& what) {
    return make_error(ec::config_invalid, path + ": " + what);
  };
  // A stream cut short, or cut by the guard, shows as invalid JSON too: the cause comes first.
  if (source.error())
    return source.error();
  if (!reader.error().empty())
    return invalid(reader.error());
  switch (buffer.guard().tripped()) {
    case length_guard::overlong::string:
      return invalid(reader.at_key("string longer than 1 MiB"));
    case length_guard::overlong::between:
      return invalid(reader.at_key("more than 1 MiB between two strings"));
    case length_guard::overlong::none:
      break;
  }
  if (!parsed)
    return invalid(buffer.served() == 0 ? "empty file" : reader.invalid_json());
  if (!drained)
    return invalid("data after the JSON value, at byte " + std::to_string(end));
  if (auto key = reader.missing())
    return invalid("missing key \"" + *key + "\"");
  std::erase_if(profile.offsets, [&](auto& entry) {
    auto dot = entry.first.find('.');
    std::string_view type = std::string_view(entry.first).substr(0, dot);
    std::string_view field = std::string_view(entry.first).substr(dot + 1);
    return std::none_of(fields_of(profile.os).begin(), fields_of(profile.os).end(),
                        [&](auto& f) { return f.type == type && f.field == field; });
  });
  if (profile.os == kernel_os::windows_kernel)
    profile.banner.reset();
  return profile;
}

/// Levenshtein distance of `a` and `b`, or anything above `bound` once it must exceed it.
/// Only the cells within `bound` of the diagonal are computed: a path through any other one
/// costs more. `row` is scratch space, reused between calls.
size_t edit_distance(std::string_view a, std::string_view b, size_t bound,
                     std::vector<size_t>& row) {
  bound = std::min(bound, std::max(a.size(), b.size()));
  const size_t over = bound + 1;  // every cell outside the band holds this
  row.resize(a.size() + 1);
  for (size_t j = 0; j <= a.size(); ++j)
    row[j] = std::min(j, over);
  for (size_t i = 1; i <= b.size(); ++i) {
    size_t lo = i > bound ? i - bound : 1;
    size_t hi = std::min(a.size(), i + bound);
    if (lo > hi)
      return over;
    size_t diagonal = row[lo - 1];
    row[lo - 1] = lo == 1 ? std::min(i, over) : over;
    size_t smallest = row[lo - 1];
    for (size_t j = lo; j <= hi; ++j) {
      size_t above = row[j];
      row[j] = std::min({above + 1, row[j - 1] + 1, diagonal + (a[j - 1] != b[i - 1]), over});
      diagonal = above;
      smallest = std::min(smallest, row[j]);
    }
    // A row's minimum never decreases further down: past the bound, the rest is wasted.
    if (smallest > bound)
      return smallest;
  }
  return row[a.size()];
}

}  // namespace

const char* to_string(kernel_os os) {
  switch (os) {
    case kernel_os::linux_kernel:
      return "linux";
    case kernel_os::windows_kernel:
      return "windows";
  }
  return "unknown";
}

std::optional<kernel_os> kernel_os_from(std::string_view name) {
  if (name == "linux")
    return kernel_os::linux_kernel;
  if (name == "windows")
    return kernel_os::windows_kernel;
  return std::nullopt;
}

std::vector<field_ref> fields_used(kernel_os os) {
  auto fields = fields_of(os);
  return {fields.begin(), fields.end()};
}

std::optional<uint64_t> kernel_profile::symbol(std::string_view name) const {
  if (auto it = symbols.find(std::string(name)); it != symbols.end())
    return it->second;
  return std::nullopt;
}

std::optional<uint64_t> kernel_profile::offset(std::string_view type,
                                               std::string_view field) const {
  std::string key;
  key.reserve(type.size() + 1 + field.size());
  key.append(type).append(".").append(field);
  if (auto it = offsets.find(key); it != offsets.end())
    return it->second;
  return std::nullopt;
}

std::vector<std::string> kernel_profile::nearest(std::string_view name, size_t count) const {
  struct candidate {
    size_t distance;
    const std::string* name;
    bool operator<(const candidate& o) const {
      return distance != o.distance ? distance < o.distance : *name < *o.name;
    }
  };
  std::vector<candidate> best;  // sorted, at most `count`
  std::vector<size_t> row;
  if (count == 0)
    return {};
  for (auto& [symbol_name, address] : symbols) {
    // Only a name as close as the worst kept one (a tie may still win by name) is measured;
    // the lengths alone bound the distance from below.
    size_t bound = best.size() < count ? std::numeric_limits<size_t>::max() : best.back().distance;
    size_t length_gap = symbol_name.size() > name.size() ? symbol_name.size() - name.size()
                                                         : name.size() - symbol_name.size();
    if (length_gap > bound)
      continue;
    candidate c{edit_distance(name, symbol_name, bound, row), &symbol_name};
    if (c.distance > bound || (best.size() == count && !(c < best.back())))
      continue;
    best.insert(std::upper_bound(best.begin(), best.end(), c), c);
    if (best.size() > count)
      best.pop_back();
  }
  std::vector<std::string> names;
  for (auto& c : best)
    names.push_back(*c.name);
  return names;
}

caf::expected<kernel_profile> read_profile(const std::string& path) {
  auto source = compressed_input::open(path);
  if (!source)
    return source.error();
  return read_isf(*source, path);
}

caf::expected<kernel_profile> parse_profile(std::string_view bytes, const std::string& path) {
  compressed_input source{bytes, path};
  return read_isf(source, path);
}

}  // namespace vmitap::drv
