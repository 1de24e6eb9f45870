// The Xen driver's ring against a fake Xen 4.17: 8 slots, many VCPUs, answers out of order,
// indices wrapping past 2^32, and answers Xen cannot read.

#include "tests/drivers/xen_fixture.hpp"

#include <thread>

using namespace vmitap;
using namespace vmitap::testing;
using namespace std::chrono_literals;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

// The ring: VCPUs that outnumber its 8 slots wait on Xen's waitqueue; answers in reverse
// order; the indices may start anywhere (near 2^32 they wrap). Nothing is lost.
class ring_test : public xen_driver_test, public ::testing::WithParamInterface<RING_IDX> {};

TEST_P(ring_test, sixteen_vcpus_through_eight_slots_answered_out_of_order_lose_nothing) {
  xen.first_index = GetParam();
  auto s = trapping_session(16);
  ASSERT_TRUE(s);
  auto ring = s->start_events();
  ASSERT_TRUE(ring);
  std::vector<drv::event> in(16);
  uint64_t answered = 0;
  while (answered < 3000) {
    auto n = wait_and_take(**ring, in);
    ASSERT_GT(n, 0u) << "the guest stopped raising requests after " << answered;
    EXPECT_LE(n, 8u);
    std::vector<drv::response> out;
    for (size_t i = n; i-- > 0;) {  // the last taken is answered first
      auto rsp = drv::make_response(in[i]);
      rsp.flags |= drv::flag::emulate;  // Xen executes it with the access the view lacks
      out.push_back(rsp);
    }
    auto r = (*ring)->give(out);
    ASSERT_EQ(r.failed, 0u) << render(r.first);
    answered += n;
  }
  EXPECT_EQ(xen.max_in_flight(), 8u);
  EXPECT_GT(xen.waitqueue_peak(), 0u) << "16 VCPUs, 8 slots: some waited";
  EXPECT_EQ(xen.responses_ignored(), 0u);
  EXPECT_EQ(xen.responses_dropped(), 0u);
  deny_execute(*s, view, dom->code(), drv::page_access::rwx);
  ASSERT_FALSE(s->detach());
  expect_clean();
}

INSTANTIATE_TEST_SUITE_P(indices, ring_test, ::testing::Values(RING_IDX(0), RING_IDX(0xfffffff0u)),
                         [](auto& info) { return info.param ? "wrapping" : "from_zero"; });

TEST_F(xen_driver_test, an_answer_xen_cannot_read_is_dropped_and_the_vcpu_waits_for_a_good_one) {
  auto s = trapping_session(1);
  ASSERT_TRUE(s);
  auto ring = s->start_events();
  ASSERT_TRUE(ring);
  drv::event ev;
  ASSERT_EQ(wait_and_take(**ring, {&ev, 1}), 1u);
  auto bad = drv::make_response(ev);
  bad.version = 6;
  ASSERT_EQ((*ring)->give({&bad, 1}).failed, 0u);
  EXPECT_EQ(xen.responses_dropped(), 1u);
  auto retired = dom->vcpu_retired(0);
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(dom->vcpu_retired(0), retired) << "the VCPU still waits";
  auto good = drv::make_response(ev);
  good.flags |= drv::flag::emulate;
  ASSERT_EQ((*ring)->give({&good, 1}).failed, 0u);
  ASSERT_EQ(wait_and_take(**ring, {&ev, 1}), 1u) << "it ran on and trapped again";
  EXPECT_GT(dom->vcpu_retired(0), retired);
  good = drv::make_response(ev);  // what a poller takes, it answers
  ASSERT_FALSE((*ring)->give({&good, 1}).first);
  deny_execute(*s, view, dom->code(), drv::page_access::rwx);
  ASSERT_FALSE(s->detach());  // answers the one outstanding through the ring
  expect_clean();
}

TEST_F(xen_driver_test, a_request_in_another_version_is_taken_and_a_plain_resume_frees_it) {
  boot(1);
  open();
  auto s = attach();
  ASSERT_TRUE(s);
  auto ring = s->start_events();
  ASSERT_TRUE(ring);
  dom->inject_malformed(0, sim::malformed_kind::bad_version);
  drv::event ev;
  ASSERT_EQ(wait_and_take(**ring, {&ev, 1}), 1u);
  EXPECT_EQ(ev.version, VM_EVENT_INTERFACE_VERSION - 1) << "handed on as Xen wrote it";
  EXPECT_EQ(dom->check().unanswered, 1u);
  auto retired = dom->vcpu_retired(0);
  auto plain = drv::make_response(ev);  // what the engine answers a malformed request with
  ASSERT_EQ((*ring)->give({&plain, 1}).failed, 0u);
  EXPECT_EQ(xen.responses_dropped(), 0u) << "the answer is in Xen's version: Xen reads it";
  EXPECT_EQ(dom->check().unanswered, 0u);
  for (int i = 0; i < 1000 && dom->vcpu_retired(0) == retired; ++i)
    std::this_thread::sleep_for(5ms);
  EXPECT_GT(dom->vcpu_retired(0), retired) << "the VCPU runs on";
  ASSERT_FALSE(s->detach());
  expect_clean();
}
