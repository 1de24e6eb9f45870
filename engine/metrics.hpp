#pragma once

// Every metric vmitap exports, in one place. Nothing is counted here: on each scrape the
// collector reads the plain counters of the live sessions, the sinks and the engine, and
// builds the families. A domain's series exist while a session of it is monitored; two
// sessions of one name (a domain rebooting while its old session detaches) are summed.

#include "actors/model/monitored_domain.hpp"
#include "actors/records/sinks.hpp"
#include "engine/engine_actor.hpp"

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

namespace vmitap {

struct build_identity {
  std::string version;
  std::string revision;
};

class metrics_collector final : public prometheus::Collectable {
public:
  metrics_collector(std::shared_ptr<domain_directory> domains, std::shared_ptr<sink_book> sinks,
                    const engine_counters& engine, build_identity build);
  std::vector<prometheus::MetricFamily> Collect() const override;

private:
  std::shared_ptr<domain_directory> domains_;
  std::shared_ptr<sink_book> sinks_;
  const engine_counters& engine_;
  build_identity build_;
};

/// process_* as Prometheus client libraries export them, read from /proc at each scrape.
std::shared_ptr<prometheus::Collectable> make_process_collector();

/// The text exposition of `collectables` (what /metrics serves).
std::string render_metrics(
  const std::vector<std::shared_ptr<prometheus::Collectable>>& collectables);

}  // namespace vmitap
