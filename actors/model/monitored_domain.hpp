#pragma once

// What every part of one domain session shares: who it is, what it counts, and the current
// breakpoint table. The supervisor creates it; the registry publishes into it; the poller
// that owns the domain's ring reads from it; the engine's exporter and progress read it.

#include "actors/model/counters.hpp"
#include "actors/model/hit.hpp"
#include "actors/model/live_set.hpp"
#include "actors/model/snapshot.hpp"

#include <mutex>

namespace vmitap {

class monitored_domain {
public:
  monitored_domain(drv::domain_info info, uint64_t session) :
    info_(std::move(info)), session_(session), counters_(info_.vcpus) {
    auto id = std::make_shared<domain_identity>();
    id->id = info_.id;
    id->name = info_.name;
    identity_ = std::move(id);
  }

  const drv::domain_info& info() const { return info_; }
  /// Unique per attach in this process: a domain that reboots under its name is another.
  uint64_t session() const { return session_; }
  domain_counters& counters() { return counters_; }
  const domain_counters& counters() const { return counters_; }
  snapshot_cell& table() { return table_; }
  const snapshot_cell& table() const { return table_; }

  std::shared_ptr<const domain_identity> identity() const {
    std::lock_guard g{mutex_};
    return identity_;
  }
  /// Names the views (once they exist); records and labels use the names from then on.
  void name_views(std::map<drv::view_id, std::string> names) {
    auto id = std::make_shared<domain_identity>(*identity());
    id->view_names = std::move(names);
    std::lock_guard g{mutex_};
    identity_ = std::move(id);
  }

  /// Breakpoints kept by name but out of the table for now: suppressed by their rate limit,
  /// or virtual ones whose page is not mapped (the registry publishes them here, so their
  /// series do not vanish meanwhile).
  std::vector<breakpoint_ptr> out_of_table() const {
    std::lock_guard g{mutex_};
    return out_of_table_;
  }
  void publish_out_of_table(std::vector<breakpoint_ptr> bps) {
    std::lock_guard g{mutex_};
    out_of_table_ = std::move(bps);
  }

private:
  const drv::domain_info info_;
  const uint64_t session_;
  domain_counters counters_;
  snapshot_cell table_;
  mutable std::mutex mutex_;
  std::shared_ptr<const domain_identity> identity_;
  std::vector<breakpoint_ptr> out_of_table_;
};

using domain_ptr = std::shared_ptr<monitored_domain>;

/// The sessions alive now, for the exporter and progress.
using domain_directory = live_set<monitored_domain>;

}  // namespace vmitap
