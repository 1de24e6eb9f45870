#pragma once

// Reading what the exporter would serve: one family's series, summed over those whose labels
// include the ones asked for.

#include <prometheus/metric_family.h>

#include <algorithm>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace vmitap::testing {

/// The sum of `f`'s counter or gauge values over its series that carry every one of
/// `labels`; none if no series does.
inline std::optional<double> series_sum(const prometheus::MetricFamily& f,
                                        const std::map<std::string, std::string>& labels) {
  std::optional<double> sum;
  for (auto& m : f.metric) {
    bool match = true;
    for (auto& [k, v] : labels)
      match &= std::any_of(m.label.begin(), m.label.end(),
                           [&](auto& l) { return l.name == k && l.value == v; });
    if (match)
      sum = sum.value_or(0) +
            (f.type == prometheus::MetricType::Counter ? m.counter.value : m.gauge.value);
  }
  return sum;
}

/// The same for the family called `name` in `families`.
inline std::optional<double> metric_value(const std::vector<prometheus::MetricFamily>& families,
                                          const std::string& name,
                                          const std::map<std::string, std::string>& labels) {
  for (auto& f : families)
    if (f.name == name)
      return series_sum(f, labels);
  return std::nullopt;
}

}  // namespace vmitap::testing
