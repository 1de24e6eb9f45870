#pragma once

// A JSONL sink's hit records as a test compares them with the ground truth: by VCPU and
// breakpoint, in the order they were written (one VCPU's hits are in its own order).

#include <nlohmann/json.hpp>

#include <cstdint>
#include <fstream>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace vmitap::testing {

using records_by_vcpu = std::map<std::pair<uint32_t, std::string>, std::vector<nlohmann::json>>;

inline records_by_vcpu read_records(const std::string& path) {
  records_by_vcpu out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    out[{j["vcpu"].get<uint32_t>(), j["breakpoint"].get<std::string>()}].push_back(j);
  }
  return out;
}

}  // namespace vmitap::testing
