#pragma once

// The hit record's wire format: one JSON object per line. Every field is documented in the
// README ("Hit records"); `schema` changes when a field changes meaning or goes away.

#include "actors/model/hit.hpp"

#include <string>

namespace vmitap {

inline constexpr int hit_schema_version = 1;

/// RFC 3339 UTC with microseconds: 2026-11-25T13:16:34.123456Z.
std::string rfc3339_utc(std::chrono::system_clock::time_point t);

/// One record as a JSON line, without the newline. `host` names the machine vmitap runs on.
std::string to_json_line(const hit_record& rec, const std::string& host);

}  // namespace vmitap
