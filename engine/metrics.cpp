#include "engine/metrics.hpp"

#include <prometheus/text_serializer.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <sstream>

namespace vmitap {

namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

/// One family; samples with equal label values are summed.
class family {
public:
  family(std::string name, std::string help, MetricType type, std::vector<std::string> labels) :
    labels_(std::move(labels)) {
    fam_.name = std::move(name);
    fam_.help = std::move(help);
    fam_.type = type;
  }

  void add(const std::vector<std::string>& values, double v) {
    auto& m = metric(values);
    if (fam_.type == MetricType::Counter)
      m.counter.value += v;
    else
      m.gauge.value += v;
  }

  void add(const std::vector<std::string>& values, const histogram& h) {
    auto& m = metric(values).histogram;
    auto& bounds = h.bounds();
    if (m.bucket.empty())
      for (size_t i = 0; i <= bounds.size(); ++i)
        m.bucket.push_back({0, i < bounds.size() ? bounds[i] : INFINITY});
    uint64_t cumulative = 0;
    for (size_t i = 0; i <= bounds.size(); ++i) {
      cumulative += h.bucket(i);
      m.bucket[i].cumulative_count += cumulative;
    }
    m.sample_count += cumulative;
    m.sample_sum += h.sum();
  }

  MetricFamily take() { return std::move(fam_); }

private:
  ClientMetric& metric(const std::vector<std::string>& values) {
    auto [it, fresh] = index_.try_emplace(values, fam_.metric.size());
    if (fresh) {
      ClientMetric m;
      for (size_t i = 0; i < labels_.size(); ++i)
        m.label.push_back({labels_[i], values[i]});
      fam_.metric.push_back(std::move(m));
    }
    return fam_.metric[it->second];
  }

  std::vector<std::string> labels_;
  MetricFamily fam_;
  std::map<std::vector<std::string>, size_t> index_;
};

/// The families of one scrape, in the order they are made: a family exists once it is added.
class family_list {
public:
  family& add(std::string name, std::string help, MetricType type,
              std::vector<std::string> labels) {
    items_.push_back(
      std::make_unique<family>(std::move(name), std::move(help), type, std::move(labels)));
    return *items_.back();
  }
  std::vector<MetricFamily> take() {
    std::vector<MetricFamily> out;
    for (auto& f : items_)
      out.push_back(f->take());
    return out;
  }

private:
  std::vector<std::unique_ptr<family>> items_;
};

using T = MetricType;
using domain_list = std::vector<std::shared_ptr<monitored_domain>>;

/// A view's name in labels: its configured name, else its number.
std::string view_name(const domain_identity& id, drv::view_id v) {
  auto i = id.view_names.find(v);
  return i == id.view_names.end() ? std::to_string(v) : i->second;
}

/// What the hot path counts of each request: by VCPU and reason, by verdict, malformed and
/// refused ones, captures that failed, VCPUs mid-step, handling time.
void collect_requests(family_list& out, const domain_list& domains) {
  auto& events = out.add("vmitap_events_total", "Requests from the hypervisor, by VCPU and reason.",
                         T::Counter, {"domain", "vcpu", "reason"});
  auto& neighbours = out.add("vmitap_page_neighbour_events_total",
                             "Traps on a monitored page at an address that is no breakpoint.",
                             T::Counter, {"domain"});
  auto& data_access = out.add("vmitap_data_access_events_total",
                              "Reads or writes that trapped on a page monitored for execution "
                              "(the page's access lacked them); answered with a step-over.",
                              T::Counter, {"domain"});
  auto& filtered = out.add("vmitap_filtered_hits_total",
                           "Hits in a process the breakpoint's processes filter excludes: stepped "
                           "over, not recorded.",
                           T::Counter, {"domain"});
  auto& process_failures = out.add("vmitap_process_read_failures_total",
                                   "Hits whose process could not be read through the kernel's "
                                   "structures (recorded without it).",
                                   T::Counter, {"domain"});
  auto& stale = out.add("vmitap_stale_events_total",
                        "Traps on a page whose breakpoints were removed while the trap was in "
                        "flight.",
                        T::Counter, {"domain"});
  auto& spurious = out.add("vmitap_spurious_events_total",
                           "Traps vmitap did not ask for (another view, a page it does not "
                           "monitor).",
                           T::Counter, {"domain"});
  auto& malformed =
    out.add("vmitap_malformed_events_total", "Malformed requests, answered and counted, by cause.",
            T::Counter, {"domain", "cause"});
  auto& refused = out.add("vmitap_respond_failures_total",
                          "Responses the hypervisor refused; the VCPU may be left paused.",
                          T::Counter, {"domain"});
  auto& capture_failures =
    out.add("vmitap_capture_failures_total", "Captures that could not be read at a hit, by cause.",
            T::Counter, {"domain", "cause"});
  auto& stepping = out.add("vmitap_vcpus_stepping",
                           "VCPUs between a trap and the singlestep that ends it (classic mode).",
                           T::Gauge, {"domain"});
  auto& handling = out.add("vmitap_event_handling_seconds",
                           "From a request taken from the ring to its response written.",
                           T::Histogram, {"domain"});
  for (auto& d : domains) {
    const auto& name = d->info().name;
    auto& c = d->counters();
    auto totals = c.totals();
    double steppers = 0;
    std::array<uint64_t, malformed_causes> bad{};  // by cause: totals() has their sum
    for (uint32_t i = 0; i < c.vcpu_count; ++i) {
      auto& v = c.vcpus[i];
      auto vcpu = std::to_string(i);
      events.add({name, vcpu, "mem_access"}, double(v.mem_access.get()));
      events.add({name, vcpu, "singlestep"}, double(v.singlestep.get()));
      events.add({name, vcpu, "other"}, double(v.other.get()));
      for (size_t m = 0; m < malformed_causes; ++m)
        bad[m] += v.malformed[m].get();
      steppers += v.stepping.load(std::memory_order_relaxed);
    }
    bad[size_t(malformed_cause::vcpu_out_of_range)] += c.orphans.get();
    neighbours.add({name}, double(totals.neighbours));
    data_access.add({name}, double(totals.data_accesses));
    filtered.add({name}, double(totals.filtered));
    process_failures.add({name}, double(c.process_failures.get()));
    stale.add({name}, double(totals.stale));
    spurious.add({name}, double(totals.spurious));
    for (size_t m = 0; m < malformed_causes; ++m)
      malformed.add({name, to_string(malformed_cause(m))}, double(bad[m]));
    refused.add({name}, double(totals.respond_failures));
    for (size_t f = 1; f < capture_fault_kinds; ++f)
      capture_failures.add({name, drv::to_string(drv::translation_fault(f))},
                           double(c.capture_failures[f].get()));
    stepping.add({name}, steppers);
    handling.add({name}, c.handling);
  }
}

/// Each breakpoint's hits and suppressions, and what is armed per view.
void collect_breakpoints(family_list& out, const domain_list& domains) {
  auto& hits = out.add("vmitap_breakpoint_hits_total",
                       "Breakpoint hits: executions of a breakpoint's address while it was armed.",
                       T::Counter, {"domain", "view", "breakpoint"});
  auto& suppressed = out.add("vmitap_breakpoint_suppressed_total",
                             "Times a breakpoint went over its rate limit and was disarmed for "
                             "its cool-down (breakpoints with a rate limit only).",
                             T::Counter, {"domain", "view", "breakpoint"});
  auto& breakpoints =
    out.add("vmitap_breakpoints", "Breakpoints armed, by view.", T::Gauge, {"domain", "view"});
  auto& pages = out.add("vmitap_monitored_pages", "Pages with Execute removed, by view.", T::Gauge,
                        {"domain", "view"});
  auto& pending = out.add("vmitap_pending_breakpoints",
                          "Breakpoints on a symbol or virtual address whose page is not mapped "
                          "now: armed when it is.",
                          T::Gauge, {"domain"});
  auto& tables = out.add("vmitap_watched_page_tables",
                         "Page-table pages write-protected to follow where virtual breakpoints "
                         "are.",
                         T::Gauge, {"domain"});
  auto& table_events = out.add("vmitap_page_table_events_total",
                               "Traps on watched page tables: the guest's writes (each walked "
                               "again) and the hardware's accessed/dirty updates.",
                               T::Counter, {"domain", "kind"});
  for (auto& d : domains) {
    const auto& name = d->info().name;
    auto& c = d->counters();
    pending.add({name}, c.pending.load(std::memory_order_relaxed));
    tables.add({name}, c.watched_tables.load(std::memory_order_relaxed));
    table_events.add({name, "write"}, double(c.table_writes.get()));
    table_events.add({name, "accessed_dirty"}, double(c.table_bits.get()));
    auto identity = d->identity();
    auto table = d->table().load();
    for (auto view : table->views) {
      breakpoints.add({name, view_name(*identity, view)}, table->breakpoints_per_view[view]);
      pages.add({name, view_name(*identity, view)}, table->pages_per_view[view]);
    }
    auto series = [&](const breakpoint_ptr& bp) {
      auto view = view_name(*identity, bp->view);
      hits.add({name, view, bp->name}, double(bp->hits.load(std::memory_order_relaxed)));
      if (bp->limiter())
        suppressed.add({name, view, bp->name}, double(bp->limiter()->suppressions()));
    };
    table->for_each(series);
    // The registry lists a suppressed breakpoint before it leaves the table and after it is
    // back: never missing, and skipped here while it is in both.
    for (auto& bp : d->out_of_table()) {
      auto entries = table->find(bp->view, drv::gfn_of(bp->pa()));
      if (std::none_of(entries.begin(), entries.end(), [&](auto& e) { return e.bp == bp; }))
        series(bp);
    }
  }
}

/// The handler relays' counts.
void collect_handlers(family_list& out, const domain_list& domains) {
  auto& seconds = out.add("vmitap_handler_seconds",
                          "From a hit sent to its handler to the handler's decision back.",
                          T::Histogram, {"domain"});
  auto& timeouts = out.add("vmitap_handler_timeouts_total",
                           "VCPUs resumed unchanged because the handler missed its deadline.",
                           T::Counter, {"domain"});
  auto& errors = out.add("vmitap_handler_errors_total",
                         "VCPUs resumed unchanged because the handler failed or stopped.",
                         T::Counter, {"domain"});
  auto& dropped = out.add("vmitap_handler_dropped_total",
                          "Hits whose handler call was dropped, by cause: queue_full (not sent, "
                          "the handler had too many calls queued) or expired (queued past its "
                          "deadline, not run). Their VCPUs resumed unchanged.",
                          T::Counter, {"domain", "cause"});
  for (auto& d : domains) {
    const auto& name = d->info().name;
    auto& c = d->counters();
    seconds.add({name}, c.handler_seconds);
    timeouts.add({name}, double(c.handler_timeouts.get()));
    errors.add({name}, double(c.handler_errors.get()));
    dropped.add({name, "queue_full"}, double(c.handler_queue_full.get()));
    dropped.add({name, "expired"}, double(c.handler_expired.get()));
  }
}

/// The controllers' access changes.
void collect_access(family_list& out, const domain_list& domains) {
  auto& access = out.add("vmitap_access_changes_total", "Page access changes, by result.",
                         T::Counter, {"domain", "result"});
  auto& calls =
    out.add("vmitap_access_change_calls_total",
            "Batched access-change calls made to the hypervisor.", T::Counter, {"domain"});
  auto& batch = out.add("vmitap_access_change_batch_size", "Pages per batched access-change call.",
                        T::Histogram, {"domain"});
  auto& seconds = out.add("vmitap_access_change_seconds",
                          "Duration of one batched access-change call.", T::Histogram, {"domain"});
  for (auto& d : domains) {
    const auto& name = d->info().name;
    auto& c = d->counters();
    access.add({name, "ok"}, double(c.access_ok.get()));
    access.add({name, "failed"}, double(c.access_failed.get()));
    calls.add({name}, double(c.access_calls.get()));
    batch.add({name}, c.batch_size);
    seconds.add({name}, c.access_seconds);
  }
}

/// The engine's own counts: domains, attaches, reloads.
void collect_engine(family_list& out, const engine_counters& e) {
  out.add("vmitap_domains_monitored", "Domains attached and monitored.", T::Gauge, {})
    .add({}, double(e.domains_monitored.load()));
  auto& attach = out.add("vmitap_domain_attach_total", "Domain attach attempts, by result.",
                         T::Counter, {"result"});
  attach.add({"ok"}, double(e.attach_ok.get()));
  attach.add({"failed"}, double(e.attach_failed.get()));
  auto& reloads = out.add("vmitap_config_reloads_total", "Config reloads (SIGHUP), by result.",
                          T::Counter, {"result"});
  reloads.add({"ok"}, double(e.reloads_ok.get()));
  reloads.add({"failed"}, double(e.reloads_failed.get()));
  out
    .add("vmitap_config_last_reload_successful",
         "Whether the last config reload succeeded (1) or was rejected (0).", T::Gauge, {})
    .add({}, e.last_reload_ok.load() ? 1 : 0);
  out
    .add("vmitap_config_last_reload_success_timestamp_seconds",
         "When the config was last loaded successfully (unix time).", T::Gauge, {})
    .add({}, e.last_reload_success.load());
}

/// Each open sink's records and queue.
void collect_sinks(family_list& out, const sink_book& sinks) {
  auto& records = out.add("vmitap_sink_records_total", "Hit records by sink and result.",
                          T::Counter, {"sink", "result"});
  auto& depth =
    out.add("vmitap_sink_queue_depth", "Hit records queued at a sink.", T::Gauge, {"sink"});
  for (auto& s : sinks.open_sinks()) {
    records.add({s->name, "written"}, double(s->written.get()));
    records.add({s->name, "dropped"}, double(s->dropped.load(std::memory_order_relaxed)));
    records.add({s->name, "error"}, double(s->errors.get()));
    depth.add({s->name}, double(s->depth.load(std::memory_order_relaxed)));
  }
}

}  // namespace

metrics_collector::metrics_collector(std::shared_ptr<domain_directory> domains,
                                     std::shared_ptr<sink_book> sinks,
                                     const engine_counters& engine, build_identity build) :
  domains_(std::move(domains)),
  sinks_(std::move(sinks)),
  engine_(engine),
  build_(std::move(build)) {}

std::vector<MetricFamily> metrics_collector::Collect() const {
  auto domains = domains_->list();
  family_list out;
  collect_requests(out, domains);
  collect_breakpoints(out, domains);
  collect_handlers(out, domains);
  collect_access(out, domains);
  collect_engine(out, engine_);
  collect_sinks(out, *sinks_);
  out
    .add("vmitap_build_info", "vmitap's version and source revision; always 1.", T::Gauge,
         {"version", "revision"})
    .add({build_.version, build_.revision}, 1);
  return out.take();
}

std::string render_metrics(
  const std::vector<std::shared_ptr<prometheus::Collectable>>& collectables) {
  std::vector<MetricFamily> families;
  for (auto& c : collectables)
    for (auto& f : c->Collect())
      families.push_back(std::move(f));
  std::ostringstream out;
  prometheus::TextSerializer{}.Serialize(out, families);
  return out.str();
}

}  // namespace vmitap
