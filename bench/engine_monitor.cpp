// vmitap itself as a benchmarked monitor: the engine with its pollers and actors, no
// exporter and no sinks (the baselines write no records either). The slow handler, if any,
// is a hit handler on every breakpoint of the first domain, as a user would register it.

#include "bench/monitors.hpp"
#include "engine/backend_sim.hpp"
#include "engine/engine.hpp"

namespace vmitap::bench {

namespace {

class engine_monitor final : public monitor {
public:
  engine_monitor(std::shared_ptr<sim::hypervisor> hv, std::vector<domain_spec> specs,
                 monitor_options opts) :
    hv_(std::move(hv)), specs_(std::move(specs)) {
    cfg_.metrics_listen = "";
    cfg_.pollers = opts.pollers;
    cfg_.poller_spin = opts.spin;
    if (opts.slow_handler.count() > 0) {
      auto handlers = std::make_shared<handler_registry>();
      handlers->add("slow", [opts](const handler_hit&) {
        slow_handler(opts);
        return handler_decision::resume();
      });
      handlers_ = std::move(handlers);
    }
    for (size_t i = 0; i < specs_.size(); ++i) {
      engine_config::domain_entry e;
      e.select.id = specs_[i].dom->id();
      e.plan = specs_[i].plan;
      if (i == 0 && handlers_) {
        auto plan = std::make_shared<domain_plan>(*e.plan);
        for (auto& bp : plan->breakpoints)
          bp.options.handler = handler_binding{"slow", std::chrono::seconds(1)};
        e.plan = std::move(plan);
      }
      cfg_.domains.push_back(std::move(e));
    }
  }

  caf::error start() override {
    eng_ = std::make_unique<engine>(cfg_, std::make_shared<sim::sim_driver>(hv_), 0, handlers_);
    if (auto err = eng_->start())
      return err;
    // Every domain attached: the guests run from here, as they do for the baselines.
    for (int i = 0; i < 20000 && eng_->counters().domains_monitored.load() < int64_t(specs_.size());
         ++i)
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    return {};
  }

  uint64_t events() override {
    uint64_t n = 0;
    for (auto& p : eng_->progress())
      n += p.events;
    return n;
  }

  std::chrono::nanoseconds tool_cpu() override { return eng_->pollers().cpu_time(); }

  bool stop_and_verify() override {
    auto reports = eng_->stop();
    auto* devnull = std::fopen("/dev/null", "w");
    bool ok = sim_truth(hv_, cfg_)->verify(reports, devnull);
    std::fclose(devnull);
    return ok;
  }

private:
  std::shared_ptr<sim::hypervisor> hv_;
  std::vector<domain_spec> specs_;
  engine_config cfg_;
  handler_registry_ptr handlers_;
  std::unique_ptr<engine> eng_;
};

}  // namespace

std::unique_ptr<monitor> make_baseline(monitor_kind kind, std::shared_ptr<sim::hypervisor> hv,
                                       std::vector<domain_spec> domains, monitor_options opts);

const char* to_string(monitor_kind k) {
  switch (k) {
    case monitor_kind::engine:
      return "vmitap";
    case monitor_kind::loop:
      return "single loop";
    case monitor_kind::per_domain:
      return "loop per domain";
    case monitor_kind::floor:
      return "floor";
  }
  return "?";
}

std::unique_ptr<monitor> make_monitor(monitor_kind kind, std::shared_ptr<sim::hypervisor> hv,
                                      std::vector<domain_spec> domains, monitor_options opts) {
  if (kind == monitor_kind::engine)
    return std::make_unique<engine_monitor>(std::move(hv), std::move(domains), opts);
  return make_baseline(kind, std::move(hv), std::move(domains), opts);
}

}  // namespace vmitap::bench
