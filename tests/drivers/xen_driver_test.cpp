// The Xen driver against a fake Xen 4.17 on the simulated hypervisor: the attach and teardown
// call sequences, a failure at every attach step undone, Xen's errno values turned into clear
// errors, and the ring (8 slots, many VCPUs, answers out of order, indices wrapping past 2^32).

#include "drivers/error.hpp"
#include "drivers/xen/xen_driver.hpp"
#include "tests/support/fake_xen.hpp"
#include "tests/support/sim_fixture.hpp"

#include <gmock/gmock.h>

#include <condition_variable>
#include <poll.h>

using namespace vmitap;
using namespace vmitap::testing;
using namespace std::chrono_literals;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

namespace {

std::string lines(const std::vector<std::string>& v) {
  std::string out;
  for (auto& s : v)
    out += "  " + s + "\n";
  return out;
}

class xen_driver_test : public ::testing::Test {
protected:
  std::shared_ptr<sim::hypervisor> hv = std::make_shared<sim::hypervisor>();
  fake_xen xen{hv};
  std::shared_ptr<drv::driver> driver;
  std::shared_ptr<sim::domain> dom;

  void TearDown() override {
    driver.reset();
    EXPECT_TRUE(xen.violations().empty()) << "Xen would not have let this pass:\n"
                                          << lines(xen.violations());
  }

  void open() {
    auto d = xen::open_xen_driver(xen.api());
    ASSERT_TRUE(d) << render(d.error());
    driver = *d;
  }

  void boot(uint32_t vcpus = 2, std::string name = "guest") {
    auto cfg = small_domain(vcpus);
    cfg.name = std::move(name);
    auto made = hv->create_domain(cfg);
    ASSERT_TRUE(made) << render(made.error());
    dom = *made;
  }

  std::unique_ptr<drv::domain_session> attach() {
    auto s = driver->attach(dom->id());
    EXPECT_TRUE(s) << render(s.error());
    return s ? std::move(*s) : nullptr;
  }

  /// Nothing of vmitap's is left on the domain, and the sim agrees nothing was lost.
  void expect_clean() {
    auto id = dom->id();
    EXPECT_FALSE(xen.monitor_enabled(id));
    EXPECT_FALSE(xen.altp2m_on(id));
    EXPECT_FALSE(xen.singlestep_monitor_on(id));
    EXPECT_EQ(xen.controller_pauses(id), 0u);
    auto inv = dom->check();
    EXPECT_EQ(inv.unanswered, 0u);
    EXPECT_EQ(inv.pages_changed, 0u);
    EXPECT_EQ(inv.answered_by_detach, 0u) << "every request is answered through the ring";
    EXPECT_EQ(inv.requests_raised, inv.requests_answered + inv.dropped_by_death);
  }

  static void deny_execute(drv::domain_session& s, drv::view_id view, const sim::program& code,
                           drv::page_access value = drv::page_access::rw) {
    std::vector<drv::access_change> changes;
    for (auto gfn = code.first_code_gfn(); gfn <= code.last_code_gfn(); ++gfn)
      changes.push_back({gfn, value});
    auto err = s.set_access(view, changes);
    ASSERT_FALSE(err) << render(err);
  }
};

/// Sleeps on the ring's descriptor as a poller does, then takes what is there.
size_t wait_and_take(drv::event_ring& ring, std::span<drv::event> out) {
  for (int i = 0; i < 2000; ++i) {
    if (auto n = ring.take(out))
      return n;
    if (!ring.arm())
      continue;
    pollfd p{ring.fd(), POLLIN, 0};
    if (poll(&p, 1, 5) == 1)
      ring.acknowledge();
  }
  return 0;
}

}  // namespace

TEST_F(xen_driver_test, without_xen_opening_fails_with_one_clear_line) {
  xen.present = false;
  auto d = xen::open_xen_driver(xen.api());
  ASSERT_FALSE(d);
  EXPECT_EQ(code_of(d.error()), ec::no_hypervisor);
  EXPECT_THAT(render(d.error()), HasSubstr("/dev/xen/privcmd"));
  EXPECT_EQ(render(d.error()).find('\n'), std::string::npos);
}

TEST(xen_capabilities, fast_singlestep_is_relied_on_from_4_17_4_and_4_19) {
  EXPECT_FALSE(xen::capabilities_of(4, 17, ".0").fast_singlestep);
  EXPECT_FALSE(xen::capabilities_of(4, 17, ".3").fast_singlestep);
  EXPECT_FALSE(xen::capabilities_of(4, 17, "-rc").fast_singlestep);
  EXPECT_TRUE(xen::capabilities_of(4, 17, ".4").fast_singlestep);
  EXPECT_TRUE(xen::capabilities_of(4, 17, ".10").fast_singlestep);
  EXPECT_FALSE(xen::capabilities_of(4, 18, ".0").fast_singlestep);
  EXPECT_TRUE(xen::capabilities_of(4, 19, ".0").fast_singlestep);
  EXPECT_TRUE(xen::capabilities_of(5, 0, "").fast_singlestep);
  EXPECT_THAT(xen::capabilities_of(4, 17, ".1").why, HasSubstr("4.17.4"));
}

TEST_F(xen_driver_test, the_version_xen_reports_decides_the_capabilities) {
  xen.extraversion = ".1";
  open();
  EXPECT_FALSE(driver->caps().fast_singlestep);
  EXPECT_THAT(driver->caps().why, HasSubstr("Xen 4.17.1"));
}

TEST_F(xen_driver_test, lists_guests_with_their_names_but_not_dom0) {
  boot(3, "web-1");
  open();
  auto list = driver->list_domains();
  ASSERT_TRUE(list);
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].id, dom->id());
  EXPECT_EQ((*list)[0].name, "web-1");
  EXPECT_EQ((*list)[0].vcpus, 3u);
}

TEST_F(xen_driver_test, attach_and_detach_make_xens_calls_in_the_documented_order) {
  boot();
  open();
  xen.clear_calls();
  auto s = attach();
  ASSERT_TRUE(s);
  auto id = std::to_string(dom->id());
  auto on = [&](std::string call) { return call + "(" + id + ")"; };
  EXPECT_THAT(xen.calls(), ElementsAreArray({
    on("xc_monitor_get_capabilities"), on("xc_domain_maximum_gpfn"), on("xc_domain_pause"),
    std::string("xenevtchn_open"), std::string("xenforeignmemory_open"), on("xc_monitor_enable"),
    on("xenevtchn_bind_interdomain"), on("xc_hvm_param_get"), on("xc_altp2m_get_domain_state"),
    on("xc_altp2m_set_domain_state"), on("xc_monitor_singlestep"), on("xc_domain_unpause")}));
  EXPECT_TRUE(xen.monitor_enabled(dom->id()));
  EXPECT_TRUE(xen.altp2m_on(dom->id()));
  EXPECT_TRUE(xen.singlestep_monitor_on(dom->id()));
  EXPECT_EQ(s->info().max_gfn, dom->info().max_gfn);

  auto view = s->create_view(drv::page_access::rwx);
  ASSERT_TRUE(view) << render(view.error());
  ASSERT_FALSE(s->switch_all(*view));
  xen.clear_calls();
  ASSERT_FALSE(s->detach());
  EXPECT_THAT(xen.calls(), ElementsAreArray({
    on("xc_domain_pause"), on("xc_altp2m_switch_to_view"), on("xc_altp2m_destroy_view"),
    on("xc_altp2m_set_domain_state"), on("xc_domain_debug_control"), on("xc_domain_debug_control"),
    on("xc_monitor_singlestep"), std::string("unmap_ring"), on("xc_monitor_disable"),
    std::string("xenevtchn_unbind"), on("xc_domain_unpause"), std::string("xenforeignmemory_close"),
    std::string("xenevtchn_close")}));
  expect_clean();
  EXPECT_FALSE(s->detach()) << "idempotent";
}

class attach_step : public xen_driver_test, public ::testing::WithParamInterface<const char*> {};

TEST_P(attach_step, failing_undoes_every_step_before_it_and_names_the_call_and_errno) {
  boot();
  open();
  xen.fail_next(GetParam(), EIO);
  auto failed = driver->attach(dom->id());
  ASSERT_FALSE(failed);
  EXPECT_THAT(render(failed.error()), HasSubstr(GetParam()));
  EXPECT_THAT(render(failed.error()), HasSubstr("errno 5"));
  EXPECT_FALSE(xen.monitor_enabled(dom->id()));
  EXPECT_FALSE(xen.altp2m_on(dom->id()));
  EXPECT_FALSE(xen.singlestep_monitor_on(dom->id()));
  EXPECT_EQ(xen.controller_pauses(dom->id()), 0u);
  // Nothing is left behind: the next attach works and ends clean.
  auto s = attach();
  ASSERT_TRUE(s);
  ASSERT_FALSE(s->detach());
  expect_clean();
}

INSTANTIATE_TEST_SUITE_P(every, attach_step,
                         ::testing::Values("xc_monitor_get_capabilities", "xc_domain_maximum_gpfn",
                                           "xc_domain_pause", "xenevtchn_open",
                                           "xenforeignmemory_open", "xc_monitor_enable",
                                           "xenevtchn_bind_interdomain", "xc_hvm_param_get",
                                           "xc_altp2m_get_domain_state",
                                           "xc_altp2m_set_domain_state", "xc_monitor_singlestep",
                                           "xc_domain_unpause"),
                         [](auto& info) { return std::string(info.param); });

TEST_F(xen_driver_test, another_monitor_on_the_domain_is_named_with_what_to_do) {
  boot();
  open();
  auto first = attach();
  ASSERT_TRUE(first);
  auto other = xen::open_xen_driver(xen.api());  // a second tool on the same host
  ASSERT_TRUE(other);
  auto second = (*other)->attach(dom->id());
  ASSERT_FALSE(second);
  EXPECT_EQ(code_of(second.error()), ec::another_monitor);
  EXPECT_THAT(render(second.error()), HasSubstr("xc_monitor_disable"));
  EXPECT_TRUE(xen.monitor_enabled(dom->id())) << "the first monitor is undisturbed";
  ASSERT_FALSE(first->detach());
  expect_clean();
}

TEST_F(xen_driver_test, missing_hypervisor_features_are_explained) {
  boot();
  open();
  xen.altp2m_supported = false;
  auto no_altp2m = driver->attach(dom->id());
  ASSERT_FALSE(no_altp2m);
  EXPECT_EQ(code_of(no_altp2m.error()), ec::incompatible_hypervisor);
  EXPECT_THAT(render(no_altp2m.error()), HasSubstr("altp2m=1"));
  xen.altp2m_supported = true;
  xen.mtf = false;
  auto no_mtf = driver->attach(dom->id());
  ASSERT_FALSE(no_mtf);
  EXPECT_THAT(render(no_mtf.error()), HasSubstr("singlestep"));
  xen.mtf = true;
  xen.vm_event_version = 6;
  auto old = driver->attach(dom->id());
  ASSERT_FALSE(old);
  EXPECT_THAT(render(old.error()), HasSubstr("version 6"));
  xen.vm_event_version = VM_EVENT_INTERFACE_VERSION;
  EXPECT_EQ(xen.controller_pauses(dom->id()), 0u);
  EXPECT_FALSE(xen.monitor_enabled(dom->id()));
}

TEST_F(xen_driver_test, altp2m_disabled_in_the_domain_is_switched_to_external_mode) {
  xen.altp2m_param = XEN_ALTP2M_disabled;
  boot();
  open();
  auto s = attach();
  ASSERT_TRUE(s);
  EXPECT_THAT(xen.calls(), ::testing::Contains("xc_hvm_param_set(" + std::to_string(dom->id()) + ")"));
  EXPECT_TRUE(xen.altp2m_on(dom->id()));
  ASSERT_FALSE(s->detach());
  expect_clean();
}

TEST_F(xen_driver_test, an_entry_not_yet_in_a_view_reads_the_hosts_access) {
  boot();
  open();
  auto s = attach();
  ASSERT_TRUE(s);
  auto view = s->create_view(drv::page_access::rwx);
  ASSERT_TRUE(view);
  drv::gfn_t gfn = dom->code().first_code_gfn();
  drv::page_access out{};
  xen.fail_next("xc_altp2m_get_mem_access", ESRCH);
  ASSERT_FALSE(s->get_access(*view, {&gfn, 1}, {&out, 1}));
  EXPECT_EQ(out, drv::page_access::rwx);
  EXPECT_THAT(xen.calls(), ::testing::Contains("xc_get_mem_access(" + std::to_string(dom->id()) + ")"));
  ASSERT_FALSE(s->detach());
}

TEST_F(xen_driver_test, a_batch_that_fails_midway_leaves_a_prefix_the_read_back_sees) {
  boot();
  open();
  auto s = attach();
  ASSERT_TRUE(s);
  auto view = s->create_view(drv::page_access::rwx);
  ASSERT_TRUE(view);
  dom->fail_access_changes(1, 3, EIO);
  std::vector<drv::access_change> changes;
  std::vector<drv::gfn_t> gfns;
  for (drv::gfn_t g = 0; g < 10; ++g) {
    changes.push_back({dom->code().first_code_gfn() + g, drv::page_access::rw});
    gfns.push_back(changes.back().gfn);
  }
  auto err = s->set_access(*view, changes);
  ASSERT_TRUE(err);
  EXPECT_THAT(render(err), HasSubstr("xc_altp2m_set_mem_access_multi"));
  EXPECT_THAT(render(err), HasSubstr("errno 5"));
  std::vector<drv::page_access> now(gfns.size());
  ASSERT_FALSE(s->get_access(*view, gfns, now));
  for (size_t i = 0; i < now.size(); ++i)
    EXPECT_EQ(now[i], i < 3 ? drv::page_access::rw : drv::page_access::rwx) << i;
  for (auto& c : changes)
    c.value = drv::page_access::rwx;
  ASSERT_FALSE(s->set_access(*view, changes));
  ASSERT_FALSE(s->detach());
  expect_clean();
}

TEST_F(xen_driver_test, guest_memory_reads_through_foreign_mappings) {
  boot();
  open();
  auto s = attach();
  ASSERT_TRUE(s);
  auto pa = dom->code().functions()[0].entry_pa - 5;  // across nothing in particular
  std::vector<std::byte> got(3 * drv::page_size);
  ASSERT_FALSE(s->read_physical(pa, got));
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_EQ(got[i], dom->code().is_code(drv::gfn_of(pa + i)) ? dom->code().code_byte(pa + i) : std::byte{0}) << i;
  std::byte one[1];
  auto err = s->read_physical((dom->info().max_gfn + 1) * drv::page_size, one);
  EXPECT_EQ(code_of(err), ec::gfn_out_of_range) << render(err);
  ASSERT_FALSE(s->detach());
}

TEST_F(xen_driver_test, a_dead_domain_is_detached_without_calls_that_would_fail) {
  boot();
  open();
  auto s = attach();
  ASSERT_TRUE(s);
  dom->kill();
  xen.clear_calls();
  EXPECT_FALSE(s->detach());
  EXPECT_THAT(xen.calls(), ElementsAreArray({"unmap_ring", "xenevtchn_unbind",
                                             "xenforeignmemory_close", "xenevtchn_close"}));
}

TEST_F(xen_driver_test, the_watch_reports_guests_starting_and_stopping) {
  open();
  std::mutex m;
  std::condition_variable cv;
  std::vector<drv::domain_change> seen;
  ASSERT_FALSE(driver->watch([&](const drv::domain_change& c) {
    std::lock_guard g{m};
    seen.push_back(c);
    cv.notify_all();
  }));
  boot(2, "late");
  auto id = dom->id();
  {
    std::unique_lock g{m};
    ASSERT_TRUE(cv.wait_for(g, 5s, [&] { return !seen.empty(); }));
    EXPECT_TRUE(seen[0].started);
    EXPECT_EQ(seen[0].domain.name, "late");
  }
  dom.reset();
  hv->destroy_domain(id);
  {
    std::unique_lock g{m};
    ASSERT_TRUE(cv.wait_for(g, 5s, [&] { return seen.size() == 2; }));
    EXPECT_FALSE(seen[1].started);
    EXPECT_EQ(seen[1].domain.id, id);
  }
  driver->unwatch();
}

// The ring: VCPUs that outnumber its 8 slots wait on Xen's waitqueue; answers in reverse
// order; the indices may start anywhere (near 2^32 they wrap). Nothing is lost.
class ring_test : public xen_driver_test, public ::testing::WithParamInterface<RING_IDX> {};

TEST_P(ring_test, sixteen_vcpus_through_eight_slots_answered_out_of_order_lose_nothing) {
  xen.first_index = GetParam();
  boot(16);
  open();
  auto s = attach();
  ASSERT_TRUE(s);
  auto view = s->create_view(drv::page_access::rwx);
  ASSERT_TRUE(view);
  ASSERT_FALSE(s->switch_all(*view));
  deny_execute(*s, *view, dom->code());
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
  deny_execute(*s, *view, dom->code(), drv::page_access::rwx);
  ASSERT_FALSE(s->detach());
  expect_clean();
}

INSTANTIATE_TEST_SUITE_P(indices, ring_test, ::testing::Values(RING_IDX(0), RING_IDX(0xfffffff0u)),
                         [](auto& info) { return info.param ? "wrapping" : "from_zero"; });

TEST_F(xen_driver_test, an_answer_xen_cannot_read_is_dropped_and_the_vcpu_waits_for_a_good_one) {
  boot(1);
  open();
  auto s = attach();
  ASSERT_TRUE(s);
  auto view = s->create_view(drv::page_access::rwx);
  ASSERT_TRUE(view);
  ASSERT_FALSE(s->switch_all(*view));
  deny_execute(*s, *view, dom->code());
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
  deny_execute(*s, *view, dom->code(), drv::page_access::rwx);
  ASSERT_FALSE(s->detach());  // answers the one outstanding through the ring
  expect_clean();
}
