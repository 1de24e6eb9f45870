#pragma once

// Every metric vmitap exports, in one place (DESIGN.md §6). Families are built once; label
// sets are added when a domain attaches (or a breakpoint or view first appears) and removed
// when the domain goes. Actors hold the series by reference, so the hot path is one atomic
// add per counter and no message.

#include "drivers/driver.hpp"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace vmitap {

class metrics;

/// Why a request was malformed (the `cause` label).
enum class malformed_cause : uint8_t { bad_version, unknown_reason, vcpu_out_of_range };

/// The series of one monitored domain. Safe to use from any actor of the domain.
class domain_metrics {
public:
  struct vcpu_series {
    prometheus::Counter* mem_access;
    prometheus::Counter* singlestep;
    prometheus::Counter* other;
  };

  domain_metrics(metrics& m, const drv::domain_info& info);
  ~domain_metrics();  // removes every series of the domain
  domain_metrics(const domain_metrics&) = delete;
  domain_metrics& operator=(const domain_metrics&) = delete;

  const vcpu_series& vcpu(drv::vcpu_id id) const { return vcpus_.at(id); }
  prometheus::Counter& neighbours() { return *neighbours_; }
  prometheus::Counter& stale() { return *stale_; }
  prometheus::Counter& malformed(malformed_cause c) { return *malformed_[size_t(c)]; }
  prometheus::Histogram& handling() { return *handling_; }
  prometheus::Counter& access_changes(bool ok) { return ok ? *access_ok_ : *access_failed_; }
  prometheus::Histogram& batch_size() { return *batch_size_; }
  prometheus::Histogram& access_seconds() { return *access_seconds_; }
  prometheus::Gauge& vcpus_stepping() { return *stepping_; }

  /// Names views for labels; call before any per-view series is asked for.
  void name_view(drv::view_id id, std::string name);
  prometheus::Gauge& breakpoints(drv::view_id view);
  prometheus::Gauge& monitored_pages(drv::view_id view);
  prometheus::Counter& hits(drv::view_id view, const std::string& breakpoint);

private:
  template <class T, class... Args>
  T* add(prometheus::Family<T>& family, prometheus::Labels labels, Args&&... args);
  std::string view_label(drv::view_id view);
  template <class Map, class Key, class Make>
  auto& cached(Map& map, const Key& key, Make make);

  metrics& m_;
  std::string domain_;
  std::vector<vcpu_series> vcpus_;
  prometheus::Counter* neighbours_;
  prometheus::Counter* stale_;
  std::array<prometheus::Counter*, 3> malformed_;
  prometheus::Histogram* handling_;
  prometheus::Counter* access_ok_;
  prometheus::Counter* access_failed_;
  prometheus::Histogram* batch_size_;
  prometheus::Histogram* access_seconds_;
  prometheus::Gauge* stepping_;
  std::mutex mutex_;  // guards what follows
  std::map<drv::view_id, std::string> view_names_;
  std::map<drv::view_id, prometheus::Gauge*> breakpoint_gauges_;
  std::map<drv::view_id, prometheus::Gauge*> page_gauges_;
  std::map<std::pair<drv::view_id, std::string>, prometheus::Counter*> hit_counters_;
  std::vector<std::function<void()>> removers_;
};

/// The series of one sink.
struct sink_metrics {
  prometheus::Counter* written;
  prometheus::Counter* dropped;
  prometheus::Gauge* depth;
};

class metrics {
public:
  explicit metrics(const std::string& version);

  const std::shared_ptr<prometheus::Registry>& registry() const { return registry_; }
  /// Everything an exporter serves: the registry and the process_* collector.
  std::vector<std::shared_ptr<prometheus::Collectable>> collectables() const {
    return {registry_, process_};
  }
  std::shared_ptr<domain_metrics> attach_domain(const drv::domain_info& info);
  sink_metrics sink(const std::string& name);
  prometheus::Gauge& domains_monitored() { return *domains_monitored_; }
  prometheus::Counter& domain_attach(bool ok) { return ok ? *attach_ok_ : *attach_failed_; }

private:
  friend class domain_metrics;
  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<prometheus::Collectable> process_;
  prometheus::Family<prometheus::Counter>& events_;
  prometheus::Family<prometheus::Counter>& hits_;
  prometheus::Family<prometheus::Counter>& neighbours_;
  prometheus::Family<prometheus::Counter>& stale_;
  prometheus::Family<prometheus::Counter>& malformed_;
  prometheus::Family<prometheus::Histogram>& handling_;
  prometheus::Family<prometheus::Counter>& access_changes_;
  prometheus::Family<prometheus::Histogram>& batch_size_;
  prometheus::Family<prometheus::Histogram>& access_seconds_;
  prometheus::Family<prometheus::Gauge>& breakpoints_;
  prometheus::Family<prometheus::Gauge>& monitored_pages_;
  prometheus::Family<prometheus::Gauge>& stepping_;
  prometheus::Family<prometheus::Counter>& sink_records_;
  prometheus::Family<prometheus::Gauge>& sink_depth_;
  prometheus::Gauge* domains_monitored_;
  prometheus::Counter* attach_ok_;
  prometheus::Counter* attach_failed_;
};

/// Bucket bounds for the event-handling histogram: microseconds to a second.
const prometheus::Histogram::BucketBoundaries& handling_buckets();

}  // namespace vmitap
