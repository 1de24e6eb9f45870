#include "engine/config_breakpoints.hpp"

#include <algorithm>
#include <cstdlib>
#include <set>

namespace vmitap {

namespace {

using reader = config_reader;

/// An address expression in a capture, compiled for `cc`; an error points at the character.
std::optional<address_expr> read_expr(reader& r, const toml::node& node, const std::string& key,
                                      drv::calling_convention cc) {
  auto text = node.value_exact<std::string>();
  if (!text) {
    r.error(node.source(), key, "expected an address expression string (\"rdi\", \"[rsp+0x28]\")");
    return std::nullopt;
  }
  auto parsed = parse_address_expr(*text, cc);
  if (!parsed.expr) {
    auto where = node.source();
    where.begin.column += toml::source_index(1 + parsed.offset);  // past the opening quote
    r.error(where, key, "\"" + *text + "\": " + parsed.error);
  }
  return parsed.expr;
}

/// `capture = [ "rdi", { name = "path", string = "arg1", max = 260 }, … ]`
capture_list read_captures(reader& r, const toml::table& b, const std::string& bpath,
                           drv::calling_convention cc) {
  auto* node = b.get("capture");
  if (!node)
    return {};
  auto key = bpath + ".capture";
  auto* list = node->as_array();
  if (!list) {
    r.error(node->source(), key, "expected an array of captures");
    return {};
  }
  auto specs = std::make_shared<std::vector<capture_spec>>();
  std::set<std::string> names;
  for (size_t i = 0; i < list->size(); ++i) {
    auto& item = *list->get(i);
    auto ikey = reader::indexed(key, i);
    capture_spec c;
    if (auto text = item.value_exact<std::string>()) {
      if (text->size() > defaults::max_name_bytes) {
        r.error(item.source(), ikey,
                "longer than " + std::to_string(defaults::max_name_bytes) +
                  " bytes, the limit for a capture (its expression is its name)");
        continue;
      }
      c.name = c.source = *text;
      if (auto e = read_expr(r, item, ikey, cc))
        c.at = std::move(*e);
      else
        continue;
    } else if (auto* t = item.as_table()) {
      r.allow_only(*t, ikey, {"name", "value", "bytes", "string", "wstring", "length", "max"});
      if (auto n = r.get_string(*t, "name", ikey, "a string"))
        c.name = *n;
      else if (!t->get("name"))
        r.error(t->source(), ikey + ".name", "missing: a table capture needs a name");
      static constexpr std::pair<std::string_view, capture_spec::kind> kinds[] = {
        {"value", capture_spec::kind::value},
        {"bytes", capture_spec::kind::bytes},
        {"string", capture_spec::kind::ascii},
        {"wstring", capture_spec::kind::utf16}};
      const toml::node* at = nullptr;
      for (auto& [k, kind] : kinds)
        if (auto* n = t->get(k)) {
          if (at)
            r.error(n->source(), ikey + "." + std::string(k),
                    "a capture reads one of value, bytes, string or wstring");
          at = n;
          c.type = kind;
        }
      if (!at) {
        r.error(t->source(), ikey, "missing what to read: value, bytes, string or wstring");
        continue;
      }
      c.source = at->value_or(std::string{});
      if (auto e = read_expr(r, *at, ikey, cc))
        c.at = std::move(*e);
      bool is_string = c.type == capture_spec::kind::ascii || c.type == capture_spec::kind::utf16;
      if (c.type == capture_spec::kind::bytes) {
        if (auto n = r.get_count(*t, "length", ikey, 1, max_capture_length))
          c.length = uint32_t(*n);
        else if (!t->get("length"))
          r.error(t->source(), ikey + ".length", "missing: how many bytes to read");
      } else if (t->get("length")) {
        r.error(reader::where(*t, "length"), ikey + ".length", "only a bytes capture has a length");
      }
      if (is_string) {
        c.length = 256;
        if (auto n = r.get_count(*t, "max", ikey, 1, max_capture_length))
          c.length = uint32_t(*n);
      } else if (t->get("max")) {
        r.error(reader::where(*t, "max"), ikey + ".max",
                "only a string or wstring capture has a max");
      }
    } else {
      r.error(item.source(), ikey, "expected an expression string or a table");
      continue;
    }
    if (c.name.empty())
      continue;
    if (!names.insert(c.name).second)
      r.error(item.source(), ikey, "duplicate capture name \"" + c.name + "\" in this breakpoint");
    specs->push_back(std::move(c));
  }
  // A hit's record carries what its captures read: bounded per breakpoint.
  if (list->size() > defaults::max_captures)
    r.error(node->source(), key,
            std::to_string(list->size()) + " captures; a breakpoint may have at most " +
              std::to_string(defaults::max_captures));
  size_t bytes = 0;
  for (auto& c : *specs)
    bytes += capture_bytes(c);
  if (bytes > defaults::max_capture_bytes_per_hit)
    r.error(node->source(), key,
            "the captures read " + std::to_string(bytes) + " bytes at a hit; at most " +
              std::to_string(defaults::max_capture_bytes_per_hit) + " together");
  return {std::move(specs)};
}

constexpr uint64_t max_handler_deadline_us = 10'000'000;

/// `handler = "name"` and its `handler_deadline_us`: the name must be registered.
std::optional<handler_binding> read_handler(reader& r, const toml::table& b,
                                            const std::string& bpath,
                                            const handler_registry* handlers) {
  auto name = r.get_string(b, "handler", bpath, "a handler's name");
  auto deadline = r.get_count(b, "handler_deadline_us", bpath, 1, max_handler_deadline_us);
  if (!name) {
    if (b.get("handler_deadline_us") && !b.get("handler"))
      r.error(reader::where(b, "handler_deadline_us"), bpath + ".handler_deadline_us",
              "only a breakpoint with a handler has a handler deadline");
    return std::nullopt;
  }
  if (!handlers || !handlers->contains(*name)) {
    std::string known;
    for (auto& n : handlers ? handlers->names() : std::vector<std::string>{})
      known += (known.empty() ? "" : ", ") + ("\"" + n + "\"");
    r.error(reader::where(b, "handler"), bpath + ".handler",
            "no handler named \"" + *name + "\" is registered (" +
              (known.empty() ? "this program registers none; handlers come from programs that "
                               "embed vmitap, see examples/embed"
                             : "registered: " + known) +
              ")");
  }
  handler_binding h{*name};
  if (deadline)
    h.deadline = std::chrono::microseconds(*deadline);
  return h;
}

/// `max_hits_per_second` and its `cooldown_ms`: off unless the maximum is given.
rate_limit read_rate_limit(reader& r, const toml::table& b, const std::string& bpath) {
  rate_limit limit;
  if (auto n = r.get_count(b, "max_hits_per_second", bpath, 1, 10'000'000))
    limit.max_per_second = uint32_t(*n);
  if (auto ms = r.get_count(b, "cooldown_ms", bpath, 1, 3'600'000)) {
    limit.cooldown = std::chrono::milliseconds(*ms);
    if (!b.get("max_hits_per_second"))
      r.error(reader::where(b, "cooldown_ms"), bpath + ".cooldown_ms",
              "only a breakpoint with max_hits_per_second has a cool-down");
  }
  return limit;
}

/// Everything a breakpoint table says but its target.
breakpoint_options read_options(reader& r, const toml::table& b, const std::string& bpath,
                                const breakpoint_reading& ctx, std::set<std::string>& names) {
  breakpoint_options o;
  o.view = ctx.views.front();
  if (auto n = r.get_string(b, "name", bpath, "a string")) {
    o.name = *n;
    if (n->empty())
      r.error(reader::where(b, "name"), bpath + ".name", "must not be empty");
    else if (!names.insert(*n).second)
      r.error(reader::where(b, "name"), bpath + ".name",
              "duplicate breakpoint name \"" + *n + "\" in this domain");
  } else if (!b.get("name")) {
    r.error(b.source(), bpath + ".name", "missing");
  }
  if (auto v = r.get_string(b, "view", bpath, "a view name")) {
    o.view = *v;
    if (std::find(ctx.views.begin(), ctx.views.end(), *v) == ctx.views.end())
      r.error(reader::where(b, "view"), bpath + ".view", "view \"" + *v + "\" is not declared");
  }
  o.tags = r.get_strings(b, "tags", bpath);
  o.captures = read_captures(r, b, bpath, ctx.cc);
  o.handler = read_handler(r, b, bpath, ctx.handlers);
  o.limit = read_rate_limit(r, b, bpath);
  o.processes = b.get("processes") ? r.get_strings(b, "processes", bpath, true) : ctx.processes;
  if (b.get("processes") && !ctx.profile && !ctx.profile_failed)
    r.error(reader::where(b, "processes"), bpath + ".processes",
            "needs the domain's profile (a hit's process is read through the kernel's "
            "structures)");
  return o;
}

/// `va`: a kernel virtual address, as a hex string "0xffffffff81234560" (TOML's integers
/// are signed 64-bit and stop below the upper half, where kernels live).
std::optional<uint64_t> read_va(reader& r, const toml::table& b, const std::string& bpath) {
  auto* node = b.get("va");
  auto s = node->value_exact<std::string>();
  if (!s) {
    r.error(node->source(), bpath + ".va",
            "expected a hex string \"0xffffffff81234560\" (TOML's integers stop at 2^63)");
    return std::nullopt;
  }
  auto digits = std::string_view(*s).substr(std::min<size_t>(2, s->size()));
  bool hex = s->starts_with("0x") && !digits.empty() && digits.size() <= 16 &&
             digits.find_first_not_of("0123456789abcdefABCDEF") == std::string_view::npos;
  if (!hex) {
    r.error(node->source(), bpath + ".va",
            "\"" + *s + "\" is not a hex address (\"0xffffffff81234560\")");
    return std::nullopt;
  }
  auto va = std::strtoull(s->c_str(), nullptr, 16);
  if (!drv::canonical(va)) {
    r.error(node->source(), bpath + ".va",
            "not a canonical x86-64 address (bits 63:47 must be all 0 or all 1)");
    return std::nullopt;
  }
  if (!(va >> 63)) {
    r.error(node->source(), bpath + ".va",
            "a user address: a breakpoint's va is a kernel one (the upper half), the same in "
            "every address space");
    return std::nullopt;
  }
  return va;
}

/// `symbol`: a name in the domain's profile; one it lacks is reported with the nearest names.
void read_symbol(reader& r, const toml::table& b, const std::string& bpath,
                 const breakpoint_reading& ctx, breakpoint_target& t) {
  auto name = r.get_string(b, "symbol", bpath, "a kernel symbol's name");
  if (!name)
    return;
  t.symbol = *name;
  if (auto off = r.get_count(b, "offset", bpath, 0, INT32_MAX))
    t.offset = *off;
  if (!ctx.profile) {
    if (!ctx.profile_failed)
      r.error(reader::where(b, "symbol"), bpath + ".symbol",
              "a symbol needs the domain's profile (profile = \"PATH\" to an ISF file)");
    return;
  }
  if (ctx.profile->symbol(*name))
    return;
  std::string nearest;
  for (auto& n : ctx.profile->nearest(*name))
    nearest += (nearest.empty() ? "" : ", ") + ("\"" + n + "\"");
  r.error(reader::where(b, "symbol"), bpath + ".symbol",
          "no symbol \"" + *name + "\" in " + ctx.profile->path +
            (nearest.empty() ? std::string{} : "; nearest: " + nearest));
}

/// Where the breakpoint traps: exactly one of `symbol` (and its `offset`), `va` (a kernel
/// virtual address) or `address` (guest physical).
breakpoint_target read_target(reader& r, const toml::table& b, const std::string& bpath,
                              const breakpoint_reading& ctx) {
  using kind = breakpoint_target::kind;
  breakpoint_target t;
  std::vector<std::string> given;
  for (auto key : {"symbol", "va", "address"})
    if (b.get(key))
      given.emplace_back(key);
  if (b.get("offset") && !b.get("symbol"))
    r.error(reader::where(b, "offset"), bpath + ".offset", "only a symbol target has an offset");
  if (given.empty()) {
    r.error(b.source(), bpath,
            "missing a target: symbol (a kernel symbol), va (a kernel virtual address) or "
            "address (guest physical)");
    return t;
  }
  if (given.size() > 1) {
    r.error(reader::where(b, given[1]), bpath + "." + given[1],
            "a breakpoint names exactly one target; this one has " + given[0] + " and " + given[1]);
    return t;
  }
  if (given[0] == "symbol") {
    t.by = kind::symbol;
    read_symbol(r, b, bpath, ctx, t);
  } else if (given[0] == "va") {
    t.by = kind::virtual_address;
    if (auto va = read_va(r, b, bpath))
      t.va = *va;
    if (!ctx.profile && !ctx.profile_failed)
      r.error(reader::where(b, "va"), bpath + ".va",
              "a virtual address needs the domain's profile (the kernel is found through it)");
  } else if (auto a = r.get_count(b, "address", bpath, 0, INT64_MAX)) {
    t.pa = *a;
    for (auto& why : ctx.check_address(t.pa))
      r.error(reader::where(b, "address"), bpath + ".address", why);
  }
  return t;
}

}  // namespace

std::vector<breakpoint_def> read_breakpoints(config_reader& r, const toml::table& d,
                                             const std::string& path,
                                             const breakpoint_reading& ctx) {
  std::vector<breakpoint_def> out;
  std::set<std::string> names;
  auto bps = r.tables(d, "breakpoint", path);
  for (size_t j = 0; j < bps.size(); ++j) {
    auto& b = *bps[j];
    auto bpath = path + "." + reader::indexed("breakpoint", j);
    r.allow_only(b, bpath,
                 {"name", "symbol", "offset", "va", "address", "view", "tags", "capture", "handler",
                  "handler_deadline_us", "max_hits_per_second", "cooldown_ms", "processes"});
    out.push_back({read_options(r, b, bpath, ctx, names), read_target(r, b, bpath, ctx)});
  }
  return out;
}

}  // namespace vmitap
