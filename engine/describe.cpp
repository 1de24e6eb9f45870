// `vmitap check`: the topology a valid config would build, for people.

#include "engine/backends.hpp"
#include "engine/config.hpp"

#include <sstream>

namespace vmitap {

std::string describe(const config& cfg) {
  std::ostringstream out;
  auto& e = cfg.engine;
  out << "config " << cfg.path << ": driver " << cfg.driver << ", " << e.worker_threads
      << " worker threads, "
      << (e.pollers ? std::to_string(e.pollers) : std::string("one per free core")) << " pollers"
      << ", stop deadline " << e.stop_deadline.count() / 1000 << " s\n";
  out << "metrics: "
      << (e.metrics_listen.empty() ? "off" : "http://" + e.metrics_listen + "/metrics") << "\n";
  for (auto& s : e.sinks) {
    out << "sink " << s.name << ": ";
    if (s.type == sink_config::kind::jsonl_file)
      out << "jsonl " << s.path
          << (s.rotate_bytes ? ", rotates at " + std::to_string(s.rotate_bytes) +
                                 " bytes keeping " + std::to_string(s.rotate_keep)
                             : std::string(", never rotated"));
    else
      out << "stdout";
    out << ", queue " << s.queue_bound << " records or " << s.queue_bytes
        << " bytes, drops the newest when full, flushed every " << s.flush_interval.count()
        << " ms\n";
  }
  out << find_backend(cfg.driver)->describe(cfg);
  for (auto& d : e.domains) {
    auto& plan = *d.plan;
    out << "domain " << d.select.describe()
        << ": supervisor + ept_controller + breakpoint_registry; step " << to_string(plan.mode)
        << "; views";
    for (auto& v : plan.views)
      out << " " << v;
    out << "; sinks";
    for (auto& s : d.sinks)
      out << " " << s;
    if (d.sinks.empty())
      out << " (none)";
    out << "\n";
    if (auto& k = plan.profile) {
      out << "  " << drv::to_string(k->os) << " kernel profile " << k->path << ": "
          << k->symbols.size() << " symbols, ";
      if (k->banner)
        out << "banner \"" << k->banner->substr(0, k->banner->find('\n')) << "\"";
      else if (k->pdb)
        out << k->pdb->database << " " << k->pdb->guid << " age " << k->pdb->age;
      out << "\n";
    }
    for (auto& [vcpu, view] : plan.vcpu_views)
      out << "  vcpu " << vcpu << " lives in view " << view << "\n";
    for (auto& def : plan.breakpoints) {
      auto& b = def.options;
      out << "  breakpoint " << b.name << " at " << def.target.describe() << " in view " << b.view;
      for (auto& t : b.tags)
        out << " #" << t;
      out << "\n";
      if (!b.captures.empty())
        for (auto& c : *b.captures.specs) {
          out << "    capture " << c.name << ": " << to_string(c.type) << " at " << c.source;
          if (c.type != capture_spec::kind::value)
            out << ", " << c.length
                << (c.type == capture_spec::kind::bytes ? " bytes" : " chars max");
          out << "\n";
        }
      if (b.limit.max_per_second > 0)
        out << "    at most " << b.limit.max_per_second << " hits/s, then disarmed for "
            << b.limit.cooldown.count() << " ms\n";
      if (!b.processes.empty()) {
        out << "    only processes";
        for (auto& p : b.processes)
          out << " " << p;
        out << "\n";
      }
      if (b.handler)
        out << "    handler " << b.handler->name << ", deadline " << b.handler->deadline.count()
            << " µs\n";
    }
  }
  return out.str();
}

}  // namespace vmitap
