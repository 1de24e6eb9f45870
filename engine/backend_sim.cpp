#include "engine/backend_sim.hpp"

#include "drivers/error.hpp"
#include "drivers/guest/guest_abi.hpp"
#include "drivers/sim/sim_driver.hpp"
#include "drivers/sim/testing/verify.hpp"

#include <map>
#include <set>
#include <sstream>

namespace vmitap {

namespace {

using reader = config_reader;

const sim_options& options(const config& cfg) {
  static const sim_options none;
  auto* o = std::any_cast<sim_options>(&cfg.backend);
  return o ? *o : none;
}

/// The sim domains `select` picks; ids are given in [[sim.domain]] order from 1, as the
/// simulated host gives them.
std::vector<const sim::domain_config*> selected(const config& cfg, const domain_selector& select) {
  std::vector<const sim::domain_config*> out;
  auto& doms = options(cfg).domains;
  for (size_t i = 0; i < doms.size(); ++i)
    if (select.matches({drv::domain_id(i + 1), doms[i].name}))
      out.push_back(&doms[i]);
  return out;
}

void read_section(reader& r, const toml::table* t, config& cfg) {
  sim_options o;
  if (t) {
    r.allow_only(*t, "sim", {"latency_us", "guest_threads", "domain"});
    if (auto n = r.get_count(*t, "latency_us", "sim", 0, 1000000))
      o.exit_latency = std::chrono::microseconds(*n);
    if (auto n = r.get_count(*t, "guest_threads", "sim", 1, 64))
      o.guest_threads = uint32_t(*n);
    std::set<std::string> names;
    auto domains = r.tables(*t, "domain", "sim");
    for (size_t i = 0; i < domains.size(); ++i) {
      auto& d = *domains[i];
      auto path = reader::indexed("sim.domain", i);
      r.allow_only(d, path,
                   {"name", "vcpus", "memory_mib", "instructions", "seed", "functions", "abi",
                    "processes", "record_calls", "module_functions", "module_interval"});
      sim::domain_config dc;
      if (auto n = r.get_string(d, "name", path, "a string")) {
        dc.name = *n;
        if (n->empty())
          r.error(reader::where(d, "name"), path + ".name", "must not be empty");
        else if (!names.insert(*n).second)
          r.error(reader::where(d, "name"), path + ".name", "duplicate domain name \"" + *n + "\"");
      } else if (!d.get("name")) {
        r.error(d.source(), path + ".name", "missing");
      }
      if (auto n = r.get_count(d, "vcpus", path, 1, 128))
        dc.vcpus = uint32_t(*n);
      if (auto n = r.get_count(d, "memory_mib", path, 1, 65536))
        dc.memory_mib = *n;
      if (auto n = r.get_count(d, "instructions", path, 0, int64_t(1) << 50))
        dc.instructions_per_vcpu = *n;
      if (auto n = r.get_count(d, "seed", path, 0, INT64_MAX))
        dc.workload.seed = *n;
      if (auto n = r.get_count(d, "functions", path, 1, 4096))
        dc.workload.functions = uint32_t(*n);
      if (auto s = r.get_string(d, "abi", path, "a string: \"sysv\" or \"ms-x64\"")) {
        if (auto cc = drv::calling_convention_from(*s))
          dc.abi = *cc;
        else
          r.error(reader::where(d, "abi"), path + ".abi",
                  "expected \"sysv\" or \"ms-x64\", got \"" + *s + "\"");
      }
      if (auto n = r.get_count(d, "processes", path, 1, 64))
        dc.processes = uint32_t(*n);
      if (auto b = r.get_bool(d, "record_calls", path))
        dc.record_calls = *b;
      if (auto n = r.get_count(d, "module_functions", path, 0, 4095))
        dc.workload.module_functions = uint32_t(*n);
      if (auto n = r.get_count(d, "module_interval", path, 1, 1'000'000))
        dc.module_interval = uint32_t(*n);
      // The code, its data and the guest's page tables, stacks and strings must fit.
      if (dc.workload.module_functions >= dc.workload.functions)
        r.error(reader::where(d, "module_functions"), path + ".module_functions",
                "must be fewer than functions (" + std::to_string(dc.workload.functions) + ")");
      else if (auto err = sim::domain::validate(dc))
        r.error(reader::where(d, "memory_mib"), path + ".memory_mib", context_of(err));
      o.domains.push_back(std::move(dc));
    }
  }
  cfg.backend = std::move(o);
}

std::vector<std::string> check_address(const config& cfg, const domain_selector& select,
                                       uint64_t pa) {
  std::vector<std::string> out;
  for (auto* d : selected(cfg, select))
    if (drv::gfn_of(pa) >= d->memory_mib * (1024 * 1024 / drv::page_size))
      out.push_back("address is not in guest memory of sim domain \"" + d->name + "\" (" +
                    std::to_string(d->memory_mib) + " MiB)");
  return out;
}

std::vector<std::string> check_vcpu(const config& cfg, const domain_selector& select,
                                    drv::vcpu_id vcpu) {
  std::vector<std::string> out;
  for (auto* d : selected(cfg, select))
    if (vcpu >= d->vcpus)
      out.push_back("sim domain \"" + d->name + "\" has " + std::to_string(d->vcpus) +
                    " VCPUs (0 to " + std::to_string(d->vcpus - 1) + ")");
  return out;
}

class sim_ground_truth final : public ground_truth {
public:
  sim_ground_truth(std::shared_ptr<sim::hypervisor> hv, engine_config cfg) :
    hv_(std::move(hv)), cfg_(std::move(cfg)) {
    for (auto& d : hv_->domains())
      expected_ += !cfg_.entries_for(d->info()).empty();
  }

  bool finished() override {
    for (auto& d : hv_->domains())
      if (d->config().instructions_per_vcpu == 0 || !d->halted())
        return false;
    return true;
  }

  bool verify(const std::vector<domain_report>& reports, std::FILE* out) override {
    std::vector<sim::observed_session> sessions;
    // Every breakpoint each domain's sessions reported, armed or removed by a reload.
    std::map<drv::domain_id, std::set<std::string>> reported;
    std::set<drv::domain_id> attached;  // a session stopped before its attach armed nothing
    for (auto& r : reports) {
      if (r.attached)
        attached.insert(r.id);
      for (auto* list : {&r.breakpoints, &r.removed})
        for (auto& bp : *list)
          reported[r.id].insert(bp.name);
    }
    std::set<drv::domain_id> checked;
    for (auto& r : reports) {
      sim::observed_session s{r.id, r.name, r.died,  r.totals,  r.access_calls,
                              {},   {},     r.error, r.sessions};
      for (auto& bp : r.breakpoints)
        // A breakpoint its rate limit disarmed missed the hits of its cool-downs.
        s.breakpoints.push_back(
          {bp.name, bp.pa, bp.view, bp.hits, bp.filtered, !bp.live && bp.suppressions == 0, false});
      for (auto& bp : r.removed)
        s.breakpoints.push_back({bp.name, bp.pa, bp.view, bp.hits, bp.filtered, false, true});
      // What the config gave the domain when the run started must have been armed in one of
      // its sessions (a failed attach reports its error instead).
      if (auto dom = hv_->find(r.id);
          dom && attached.count(r.id) && r.error.empty() && checked.insert(r.id).second)
        for (auto* entry : cfg_.entries_for(dom->info()))
          for (auto& bp : entry->plan->breakpoints)
            if (!reported[r.id].count(bp.name()))
              s.never_armed.push_back(bp.name());
      sessions.push_back(std::move(s));
    }
    auto v = sim::verify(*hv_, sessions, expected_);
    std::fputs(v.table.c_str(), out);
    return v.ok;
  }

private:
  std::shared_ptr<sim::hypervisor> hv_;
  engine_config cfg_;
  size_t expected_ = 0;
};

caf::expected<backend_instance> start_sim(const config& cfg) {
  auto& o = options(cfg);
  sim::hypervisor_config hc;
  hc.guest_threads = o.guest_threads;
  hc.exit_latency = o.exit_latency;
  auto hv = std::make_shared<sim::hypervisor>(hc);
  for (auto& d : o.domains)
    if (auto made = hv->create_domain(d); !made)
      return std::move(made.error());
  return backend_instance{std::make_shared<sim::sim_driver>(hv), o.guest_threads,
                          sim_truth(hv, cfg.engine)};
}

std::string describe_section(const config& cfg) {
  auto& o = options(cfg);
  std::ostringstream out;
  out << "sim: " << o.domains.size() << " simulated domains, " << o.guest_threads
      << " guest thread(s), exit latency "
      << std::chrono::duration_cast<std::chrono::microseconds>(o.exit_latency).count() << " us\n";
  for (size_t i = 0; i < o.domains.size(); ++i) {
    auto& d = o.domains[i];
    out << "  sim domain " << d.name << " (id " << i + 1 << "): " << d.vcpus << " vcpus, "
        << d.memory_mib << " MiB, seed " << d.workload.seed << ", " << drv::to_string(d.abi) << ", "
        << d.processes << " process(es), "
        << (d.workload.module_functions
              ? std::to_string(d.workload.module_functions) + " module function(s) paged every " +
                  std::to_string(d.module_interval) + " calls, "
              : std::string())
        << (d.instructions_per_vcpu
              ? std::to_string(d.instructions_per_vcpu) + " instructions per vcpu"
              : std::string("runs until stopped"))
        << "\n";
  }
  return out.str();
}

}  // namespace

std::shared_ptr<ground_truth> sim_truth(std::shared_ptr<sim::hypervisor> hv, engine_config cfg) {
  return std::make_shared<sim_ground_truth>(std::move(hv), std::move(cfg));
}

backend sim_backend() {
  return {"sim",
          read_section,
          check_address,
          check_vcpu,
          [](const config& cfg) -> std::optional<std::vector<drv::domain_info>> {
            std::vector<drv::domain_info> out;
            auto& doms = options(cfg).domains;
            for (size_t i = 0; i < doms.size(); ++i) {
              drv::domain_info d;
              d.id = drv::domain_id(i + 1);  // as the simulated host gives them
              d.name = doms[i].name;
              d.vcpus = doms[i].vcpus;
              out.push_back(std::move(d));
            }
            return out;
          },
          start_sim,
          describe_section};
}

}  // namespace vmitap
