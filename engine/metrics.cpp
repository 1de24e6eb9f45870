#include "engine/metrics.hpp"

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include <fstream>
#include <sstream>
#include <unistd.h>

namespace vmitap {

namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

const prometheus::Histogram::BucketBoundaries& batch_buckets() {
  static const prometheus::Histogram::BucketBoundaries b{1, 2, 4, 8, 16, 32, 64, 128, 256, 1024};
  return b;
}

const prometheus::Histogram::BucketBoundaries& call_buckets() {
  static const prometheus::Histogram::BucketBoundaries b{1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4,
                                                        1e-3, 5e-3, 1e-2, 0.1, 1};
  return b;
}

/// process_* series as Prometheus client libraries export them, read from /proc at scrape.
class process_collector : public prometheus::Collectable {
public:
  std::vector<prometheus::MetricFamily> Collect() const override {
    std::ifstream in("/proc/self/stat");
    std::string line;
    std::getline(in, line);
    // Fields after the command name (which may contain spaces) start at state (field 3).
    std::istringstream fields(line.substr(line.rfind(')') + 2));
    std::vector<std::string> f;
    for (std::string x; fields >> x;)
      f.push_back(x);
    double ticks = double(sysconf(_SC_CLK_TCK));
    auto field = [&](size_t n) { return n - 3 < f.size() ? std::stod(f[n - 3]) : 0.0; };
    double cpu = (field(14) + field(15)) / ticks;
    double rss = field(24) * double(sysconf(_SC_PAGESIZE));
    double vsize = field(23);
    double start = boot_time() + field(22) / ticks;
    auto gauge = [](std::string name, std::string help, double v, prometheus::MetricType t) {
      prometheus::MetricFamily fam;
      fam.name = std::move(name);
      fam.help = std::move(help);
      fam.type = t;
      prometheus::ClientMetric m;
      if (t == prometheus::MetricType::Counter)
        m.counter.value = v;
      else
        m.gauge.value = v;
      fam.metric.push_back(std::move(m));
      return fam;
    };
    using prometheus::MetricType;
    return {
      gauge("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", cpu,
            MetricType::Counter),
      gauge("process_resident_memory_bytes", "Resident memory size in bytes.", rss,
            MetricType::Gauge),
      gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.", vsize,
            MetricType::Gauge),
      gauge("process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.", start, MetricType::Gauge),
    };
  }

private:
  static double boot_time() {
    std::ifstream in("/proc/stat");
    for (std::string key; in >> key;) {
      if (key == "btime") {
        double t = 0;
        in >> t;
        return t;
      }
      in.ignore(1 << 16, '\n');
    }
    return 0;
  }
};

}  // namespace

const prometheus::Histogram::BucketBoundaries& handling_buckets() {
  static const prometheus::Histogram::BucketBoundaries b{
    1e-7, 2.5e-7, 5e-7, 1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2, 0.1};
  return b;
}

metrics::metrics(const std::string& version)
  : registry_(std::make_shared<prometheus::Registry>()),
    events_(BuildCounter().Name("vmitap_events_total")
              .Help("Requests received from the hypervisor, by VCPU and reason.")
              .Register(*registry_)),
    hits_(BuildCounter().Name("vmitap_breakpoint_hits_total")
            .Help("Breakpoint hits: executions of a breakpoint's address while armed.")
            .Register(*registry_)),
    neighbours_(BuildCounter().Name("vmitap_page_neighbour_events_total")
                  .Help("Traps on a monitored page at an address that is no breakpoint.")
                  .Register(*registry_)),
    stale_(BuildCounter().Name("vmitap_stale_events_total")
             .Help("Traps on a page whose breakpoints were removed while the trap was in flight.")
             .Register(*registry_)),
    malformed_(BuildCounter().Name("vmitap_malformed_events_total")
                 .Help("Malformed requests, answered and counted, by cause.")
                 .Register(*registry_)),
    handling_(BuildHistogram().Name("vmitap_event_handling_seconds")
                .Help("From a request seen by the driver to its response written.")
                .Register(*registry_)),
    access_changes_(BuildCounter().Name("vmitap_access_changes_total")
                      .Help("Page access changes, by result.")
                      .Register(*registry_)),
    batch_size_(BuildHistogram().Name("vmitap_access_change_batch_size")
                  .Help("Pages per batched access-change call.")
                  .Register(*registry_)),
    access_seconds_(BuildHistogram().Name("vmitap_access_change_seconds")
                      .Help("Duration of one batched access-change call.")
                      .Register(*registry_)),
    breakpoints_(BuildGauge().Name("vmitap_breakpoints")
                   .Help("Breakpoints registered, by view.")
                   .Register(*registry_)),
    monitored_pages_(BuildGauge().Name("vmitap_monitored_pages")
                       .Help("Pages with Execute removed, by view.")
                       .Register(*registry_)),
    stepping_(BuildGauge().Name("vmitap_vcpus_stepping")
                .Help("VCPUs between a trap and the singlestep that ends it (classic mode).")
                .Register(*registry_)),
    sink_records_(BuildCounter().Name("vmitap_sink_records_total")
                    .Help("Hit records by sink and result (written, dropped).")
                    .Register(*registry_)),
    sink_depth_(BuildGauge().Name("vmitap_sink_queue_depth")
                  .Help("Hit records queued at a sink.")
                  .Register(*registry_)) {
  auto& monitored = BuildGauge().Name("vmitap_domains_monitored")
                      .Help("Domains attached and monitored.")
                      .Register(*registry_);
  domains_monitored_ = &monitored.Add({});
  auto& attach = BuildCounter().Name("vmitap_domain_attach_total")
                   .Help("Domain attach attempts by result.")
                   .Register(*registry_);
  attach_ok_ = &attach.Add({{"result", "ok"}});
  attach_failed_ = &attach.Add({{"result", "failed"}});
  BuildGauge().Name("vmitap_build_info").Help("vmitap's version; the value is always 1.")
    .Register(*registry_).Add({{"version", version}}).Set(1);
  process_ = std::make_shared<process_collector>();
}

std::shared_ptr<domain_metrics> metrics::attach_domain(const drv::domain_info& info) {
  return std::make_shared<domain_metrics>(*this, info);
}

sink_metrics metrics::sink(const std::string& name) {
  return {&sink_records_.Add({{"sink", name}, {"result", "written"}}),
          &sink_records_.Add({{"sink", name}, {"result", "dropped"}}),
          &sink_depth_.Add({{"sink", name}})};
}

template <class T, class... Args>
T* domain_metrics::add(prometheus::Family<T>& family, prometheus::Labels labels, Args&&... args) {
  labels.emplace("domain", domain_);
  T* metric = &family.Add(labels, std::forward<Args>(args)...);
  std::lock_guard g{mutex_};
  removers_.push_back([&family, metric] { family.Remove(metric); });
  return metric;
}

domain_metrics::domain_metrics(metrics& m, const drv::domain_info& info)
  : m_(m), domain_(info.name) {
  for (drv::vcpu_id i = 0; i < info.vcpus; ++i) {
    auto v = std::to_string(i);
    vcpus_.push_back({add(m.events_, {{"vcpu", v}, {"reason", "mem_access"}}),
                      add(m.events_, {{"vcpu", v}, {"reason", "singlestep"}}),
                      add(m.events_, {{"vcpu", v}, {"reason", "other"}})});
  }
  neighbours_ = add(m.neighbours_, {});
  stale_ = add(m.stale_, {});
  malformed_ = {add(m.malformed_, {{"cause", "bad_version"}}),
                add(m.malformed_, {{"cause", "unknown_reason"}}),
                add(m.malformed_, {{"cause", "vcpu_out_of_range"}})};
  handling_ = add(m.handling_, {}, handling_buckets());
  access_ok_ = add(m.access_changes_, {{"result", "ok"}});
  access_failed_ = add(m.access_changes_, {{"result", "failed"}});
  batch_size_ = add(m.batch_size_, {}, batch_buckets());
  access_seconds_ = add(m.access_seconds_, {}, call_buckets());
  stepping_ = add(m.stepping_, {});
}

domain_metrics::~domain_metrics() {
  for (auto& remove : removers_)
    remove();
}

void domain_metrics::name_view(drv::view_id id, std::string name) {
  std::lock_guard g{mutex_};
  view_names_[id] = std::move(name);
}

std::string domain_metrics::view_label(drv::view_id view) {
  std::lock_guard g{mutex_};
  auto i = view_names_.find(view);
  return i == view_names_.end() ? std::to_string(view) : i->second;
}

template <class Map, class Key, class Make>
auto& domain_metrics::cached(Map& map, const Key& key, Make make) {
  {
    std::lock_guard g{mutex_};
    if (auto i = map.find(key); i != map.end())
      return *i->second;
  }
  auto* series = make();  // Family::Add returns the existing series for equal labels
  std::lock_guard g{mutex_};
  return *map.emplace(key, series).first->second;
}

prometheus::Gauge& domain_metrics::breakpoints(drv::view_id view) {
  return cached(breakpoint_gauges_, view,
                [&] { return add(m_.breakpoints_, {{"view", view_label(view)}}); });
}

prometheus::Gauge& domain_metrics::monitored_pages(drv::view_id view) {
  return cached(page_gauges_, view,
                [&] { return add(m_.monitored_pages_, {{"view", view_label(view)}}); });
}

prometheus::Counter& domain_metrics::hits(drv::view_id view, const std::string& breakpoint) {
  return cached(hit_counters_, std::pair{view, breakpoint}, [&] {
    return add(m_.hits_, {{"view", view_label(view)}, {"breakpoint", breakpoint}});
  });
}

}  // namespace vmitap
