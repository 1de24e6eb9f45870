#pragma once

// What a monitor counted in one domain session, summed over its VCPUs: the monitor reports it
// (actors/model/report.hpp) and the simulated hypervisor's verification compares it with its
// ground truth (drivers/sim/testing/verify.hpp). One struct for both, so neither mirrors it.

#include <cstdint>

namespace vmitap::drv {

struct session_counts {
  uint64_t events = 0;
  uint64_t hits = 0;
  uint64_t filtered = 0;  ///< hits in a process its breakpoint does not report
  uint64_t neighbours = 0;
  uint64_t data_accesses = 0;
  uint64_t stale = 0;
  uint64_t spurious = 0;
  uint64_t malformed = 0;
  uint64_t singlesteps = 0;
  uint64_t respond_failures = 0;
  uint64_t table_writes = 0;  ///< guest writes to page tables it watched
  uint64_t table_bits = 0;    ///< accessed/dirty updates in page tables it watched

  session_counts& operator+=(const session_counts& x) {
    events += x.events;
    hits += x.hits;
    filtered += x.filtered;
    neighbours += x.neighbours;
    data_accesses += x.data_accesses;
    stale += x.stale;
    spurious += x.spurious;
    malformed += x.malformed;
    singlesteps += x.singlesteps;
    respond_failures += x.respond_failures;
    table_writes += x.table_writes;
    table_bits += x.table_bits;
    return *this;
  }
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, session_counts& x) {
  return f(x.events, x.hits, x.filtered, x.neighbours, x.data_accesses, x.stale, x.spurious,
           x.malformed, x.singlesteps, x.respond_failures, x.table_writes, x.table_bits);
}

}  // namespace vmitap::drv
