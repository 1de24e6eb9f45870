// The Xen driver's attach and detach against a fake Xen 4.17: opening without Xen, the
// version Xen reports, the call sequences in the documented order (docs/DESIGN.md §9), a
// failure at every attach step undone, and Xen's errno values turned into clear errors.

#include "tests/drivers/xen_fixture.hpp"

#include <algorithm>
#include <thread>

using namespace vmitap;
using namespace vmitap::testing;
using namespace std::chrono_literals;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

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

TEST_F(xen_driver_test, a_version_xen_does_not_tell_means_classic_step_over_and_says_why) {
  xen.fail_next("xc_version", EPERM);
  open();
  EXPECT_FALSE(driver->caps().fast_singlestep);
  EXPECT_THAT(driver->caps().why, HasSubstr("xc_version(XENVER_version)"));
  EXPECT_THAT(driver->caps().why, HasSubstr("errno 1"));
  EXPECT_THAT(driver->caps().why, ::testing::Not(HasSubstr("Xen -1")));
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
  EXPECT_THAT(
    xen.calls(),
    ElementsAreArray(
      {on("xc_monitor_get_capabilities"), on("xc_domain_maximum_gpfn"), on("xc_domain_pause"),
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
  // The documented teardown: the monitor is disabled while the ring is still mapped, so an
  // EBUSY there can still be cured by answering the ring.
  EXPECT_THAT(
    xen.calls(),
    ElementsAreArray(
      {on("xc_domain_pause"), on("xc_altp2m_switch_to_view"), on("xc_altp2m_destroy_view"),
       on("xc_altp2m_set_domain_state"), on("xc_domain_debug_control"),
       on("xc_domain_debug_control"), on("xc_monitor_singlestep"), on("xc_monitor_disable"),
       std::string("unmap_ring"), std::string("xenevtchn_unbind"), on("xc_domain_unpause"),
       std::string("xenforeignmemory_close"), std::string("xenevtchn_close")}));
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

INSTANTIATE_TEST_SUITE_P(
  every, attach_step,
  ::testing::Values("xc_monitor_get_capabilities", "xc_domain_maximum_gpfn", "xc_domain_pause",
                    "xenevtchn_open", "xenforeignmemory_open", "xc_monitor_enable",
                    "xenevtchn_bind_interdomain", "xc_hvm_param_get", "xc_altp2m_get_domain_state",
                    "xc_altp2m_set_domain_state", "xc_monitor_singlestep", "xc_domain_unpause"),
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
  EXPECT_THAT(xen.calls(),
              ::testing::Contains("xc_hvm_param_set(" + std::to_string(dom->id()) + ")"));
  EXPECT_TRUE(xen.altp2m_on(dom->id()));
  ASSERT_FALSE(s->detach());
  expect_clean();
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

TEST_F(xen_driver_test, singlestep_events_vmitap_turned_on_are_off_after_detach) {
  boot();
  open();
  auto s = attach();
  ASSERT_TRUE(s);
  EXPECT_TRUE(xen.singlestep_monitor_on(dom->id()));
  xen.clear_calls();
  ASSERT_FALSE(s->detach());
  auto off = "xc_monitor_singlestep(" + std::to_string(dom->id()) + ")";
  EXPECT_THAT(xen.calls(), ::testing::Contains(off));
  EXPECT_FALSE(xen.singlestep_monitor_on(dom->id()));
  expect_clean();
}

TEST_F(xen_driver_test, singlestep_events_already_on_are_used_and_left_on_after_detach) {
  boot();
  open();
  auto id = dom->id();
  auto call = "xc_monitor_singlestep(" + std::to_string(id) + ")";
  // Someone else turned them on before vmitap came: enabling them again says EEXIST.
  ASSERT_EQ(xen.api().xc_monitor_singlestep(nullptr, id, true), 0);
  auto s = attach();
  ASSERT_TRUE(s) << "EEXIST means they are on: that is success";
  EXPECT_THAT(xen.calls(), ::testing::Contains(call));
  EXPECT_TRUE(xen.singlestep_monitor_on(id));
  xen.clear_calls();
  ASSERT_FALSE(s->detach());
  EXPECT_THAT(xen.calls(), ::testing::Not(::testing::Contains(call))) << "not vmitap's to turn off";
  EXPECT_TRUE(xen.singlestep_monitor_on(id));
  EXPECT_FALSE(xen.monitor_enabled(id));
  EXPECT_FALSE(xen.altp2m_on(id));
  EXPECT_EQ(xen.controller_pauses(id), 0u);
  EXPECT_TRUE(dom->check().holds());
}

TEST_F(xen_driver_test, vcpus_waiting_for_ring_space_at_disable_are_answered_and_disable_retried) {
  auto s = trapping_session(16);
  ASSERT_TRUE(s);
  // Nobody answers: 8 requests fill the ring and 8 VCPUs sleep on Xen's waitqueue.
  for (int i = 0; i < 1000 && xen.waitqueue_peak() < 8; ++i)
    std::this_thread::sleep_for(5ms);
  ASSERT_EQ(xen.waitqueue_peak(), 8u);
  deny_execute(*s, view, dom->code(), drv::page_access::rwx);  // they still wait
  // The teardown retries a failing notify with backoff, 12 times in all; the answers reach
  // Xen only at the 15th: until then the 8 VCPUs still wait for ring space and
  // xc_monitor_disable says EBUSY.
  xen.fail_next("xenevtchn_notify", EIO, 14);
  xen.clear_calls();
  ASSERT_FALSE(s->detach());
  auto calls = xen.calls();
  auto disable = "xc_monitor_disable(" + std::to_string(dom->id()) + ")";
  EXPECT_GE(std::count(calls.begin(), calls.end(), disable), 2) << "EBUSY, then success";
  auto last_disable = std::find(calls.rbegin(), calls.rend(), disable);
  auto unmap = std::find(calls.rbegin(), calls.rend(), std::string("unmap_ring"));
  EXPECT_TRUE(unmap < last_disable) << "the ring stays mapped until the monitor is off";
  expect_clean();
}
