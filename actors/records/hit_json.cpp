#include "actors/records/hit_json.hpp"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <ctime>

namespace vmitap {

std::string rfc3339_utc(std::chrono::system_clock::time_point t) {
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
  auto secs = std::time_t(us / 1'000'000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, int(us % 1'000'000));
  return buf;
}

std::string to_json_line(const hit_record& rec, const std::string& host) {
  nlohmann::ordered_json j;
  j["type"] = "hit";
  j["schema"] = hit_schema_version;
  j["time"] = rfc3339_utc(rec.wall);
  j["monotonic_ns"] =
    std::chrono::duration_cast<std::chrono::nanoseconds>(rec.at.time_since_epoch()).count();
  j["host"] = host;
  j["seq"] = rec.seq;
  j["domain"] = rec.domain ? rec.domain->name : std::string{};
  j["domain_id"] = rec.domain ? rec.domain->id : 0;
  j["vcpu"] = rec.vcpu;
  std::string view_name;
  if (rec.domain)
    if (auto v = rec.domain->view_names.find(rec.view); v != rec.domain->view_names.end())
      view_name = v->second;
  j["view"] = view_name;
  j["view_id"] = rec.view;
  j["breakpoint"] = rec.bp->name;
  j["tags"] = rec.bp->tags() ? *rec.bp->tags() : std::vector<std::string>{};
  if (rec.bp->limiter())  // its log shows the gaps its rate limit made
    j["suppressed"] = rec.suppressions;
  j["gfn"] = hex_string(rec.gfn);
  j["pa"] = hex_string(drv::pa_of(rec.gfn, rec.offset));
  j["gla"] = hex_string(rec.gla);
  j["rip"] = hex_string(rec.rip);
  j["cr3"] = hex_string(rec.cr3);
  if (rec.process) {  // only with a profile: a domain without one has no process to name
    j["pid"] = rec.process->pid;
    j["tid"] = rec.process->tid;
    j["ppid"] = rec.process->ppid;
    j["process"] = rec.process->name;  // guest bytes: replaced below if not UTF-8
  }
  // Values and failures apart, so each key keeps one type for a log pipeline's schema.
  if (!rec.captures.empty() && !rec.bp->captures().empty()) {
    auto& specs = *rec.bp->captures().specs;
    auto values = nlohmann::ordered_json::object();
    auto failures = nlohmann::ordered_json::object();
    auto truncated = nlohmann::ordered_json::array();
    for (size_t i = 0; i < rec.captures.size() && i < specs.size(); ++i) {
      auto& v = rec.captures[i];
      if (v.fault == drv::translation_fault::none) {
        values[specs[i].name] = text_of(v);
        if (v.truncated)
          truncated.push_back(specs[i].name);
      } else {
        failures[specs[i].name] = {{"cause", drv::to_string(v.fault)},
                                   {"address", hex_string(v.address)}};
      }
    }
    j["captures"] = std::move(values);
    if (!failures.empty())
      j["capture_errors"] = std::move(failures);
    if (!truncated.empty())
      j["captures_truncated"] = std::move(truncated);
  }
  // Names come from the config and guests: never let bad UTF-8 make the line invalid.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace vmitap
