// process_* series, as Prometheus client libraries export them, read from /proc at scrape.

#include "engine/metrics.hpp"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>
#include <fstream>
#include <sstream>

namespace vmitap {

namespace {

using prometheus::MetricFamily;
using prometheus::MetricType;

double boot_time() {
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

double open_fds() {
  double n = 0;
  if (auto* dir = opendir("/proc/self/fd")) {
    while (auto* e = readdir(dir))
      n += e->d_name[0] != '.';
    closedir(dir);
    n -= 1;  // the directory stream's own descriptor
  }
  return n;
}

MetricFamily single(std::string name, std::string help, double v, MetricType t) {
  MetricFamily fam;
  fam.name = std::move(name);
  fam.help = std::move(help);
  fam.type = t;
  prometheus::ClientMetric m;
  if (t == MetricType::Counter)
    m.counter.value = v;
  else
    m.gauge.value = v;
  fam.metric.push_back(std::move(m));
  return fam;
}

class process_collector final : public prometheus::Collectable {
public:
  std::vector<MetricFamily> Collect() const override {
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
    rlimit fds{};
    getrlimit(RLIMIT_NOFILE, &fds);
    using T = MetricType;
    return {
      single("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
             (field(14) + field(15)) / ticks, T::Counter),
      single("process_resident_memory_bytes", "Resident memory size in bytes.",
             field(24) * double(sysconf(_SC_PAGESIZE)), T::Gauge),
      single("process_virtual_memory_bytes", "Virtual memory size in bytes.", field(23), T::Gauge),
      single("process_start_time_seconds", "Start time of the process since unix epoch in seconds.",
             boot_time() + field(22) / ticks, T::Gauge),
      single("process_open_fds", "Number of open file descriptors.", open_fds(), T::Gauge),
      single("process_max_fds", "Maximum number of open file descriptors.", double(fds.rlim_cur),
             T::Gauge),
    };
  }
};

}  // namespace

std::shared_ptr<prometheus::Collectable> make_process_collector() {
  return std::make_shared<process_collector>();
}

}  // namespace vmitap
