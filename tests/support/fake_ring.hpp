#pragma once

// A test double of the port's event ring: the test queues requests, collects the responses
// and decides which ones the "hypervisor" refuses.

#include "drivers/driver.hpp"
#include "drivers/error.hpp"

#include <gtest/gtest.h>

#include <deque>
#include <map>

namespace vmitap::testing {

class fake_ring final : public drv::event_ring {
public:
  std::deque<drv::event> requests;
  std::vector<drv::response> responses;
  size_t refuse = 0;                  ///< the next this many responses are refused
  ec refusal = ec::vcpu_not_paused;   ///< with this error
  size_t gives = 0;                   ///< give() calls: one notify each
  std::vector<drv::vcpu_id> taken;    ///< every request taken, by its VCPU
  std::vector<drv::vcpu_id> refused;  ///< every response refused, by its VCPU

  size_t take(std::span<drv::event> out) override {
    size_t n = 0;
    while (n < out.size() && !requests.empty()) {
      out[n++] = requests.front();
      taken.push_back(requests.front().vcpu);
      requests.pop_front();
    }
    return n;
  }
  drv::give_result give(std::span<const drv::response> rsps) override {
    ++gives;
    drv::give_result r;
    for (auto& rsp : rsps) {
      if (refuse > 0) {
        --refuse;
        refused.push_back(rsp.vcpu);
        if (r.failed++ == 0)
          r.first = make_error(refusal, "refused by the test");
        continue;
      }
      responses.push_back(rsp);
    }
    return r;
  }
  int fd() const override { return -1; }
  drv::arm_result arm() override {
    drv::arm_result r;
    r.pending = !requests.empty();
    return r;
  }
  void acknowledge() override {}

  /// Every request taken got exactly one answer, given or refused (Xen keeps one request
  /// per VCPU outstanding, so they pair by VCPU); none was answered twice or not at all.
  ::testing::AssertionResult each_request_answered_once() const {
    std::map<drv::vcpu_id, long> open;
    for (auto v : taken)
      ++open[v];
    for (auto& rsp : responses)
      --open[rsp.vcpu];
    for (auto v : refused)
      --open[v];
    for (auto [vcpu, left] : open)
      if (left != 0)
        return ::testing::AssertionFailure()
               << "VCPU " << vcpu << ": " << (left > 0 ? "unanswered " : "answered again ")
               << std::abs(left) << " time(s)";
    return ::testing::AssertionSuccess() << taken.size() << " requests, one answer each";
  }
};

}  // namespace vmitap::testing
