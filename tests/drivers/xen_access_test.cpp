// The Xen driver's access, memory and watch calls against a fake Xen 4.17: entries not yet
// copied into a view, a batch that fails midway, guest memory through foreign mappings, and
// guests starting and stopping.

#include "tests/drivers/xen_fixture.hpp"

#include <condition_variable>

using namespace vmitap;
using namespace vmitap::testing;
using namespace std::chrono_literals;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

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
  EXPECT_THAT(xen.calls(),
              ::testing::Contains("xc_get_mem_access(" + std::to_string(dom->id()) + ")"));
  ASSERT_FALSE(s->detach());
}

// Regression (issue 21): Xen says ESRCH both for a gfn outside guest RAM and for a domain
// that is gone; a guest destroyed with breakpoints armed ended as "gfn 256 is not guest RAM".
TEST_F(xen_driver_test, esrch_for_a_gone_domain_is_a_death_and_for_a_live_one_a_bad_gfn) {
  boot();
  open();
  auto s = attach();
  ASSERT_TRUE(s);
  auto view = s->create_view(drv::page_access::rwx);
  ASSERT_TRUE(view);
  drv::gfn_t outside = dom->info().max_gfn + 1;
  drv::page_access out{};
  auto err = s->get_access(*view, {&outside, 1}, {&out, 1});
  EXPECT_EQ(code_of(err), ec::gfn_out_of_range) << render(err);
  drv::gfn_t gfn = dom->code().first_code_gfn();
  auto id = dom->id();
  dom.reset();
  hv->destroy_domain(id);
  err = s->get_access(*view, {&gfn, 1}, {&out, 1});
  EXPECT_EQ(code_of(err), ec::domain_dead) << render(err);
  std::byte one[1];
  err = s->read_physical(drv::pa_of(gfn), one);
  EXPECT_TRUE(domain_gone(err)) << render(err);
  EXPECT_FALSE(s->detach());
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
    ASSERT_EQ(got[i], dom->code().is_code(drv::gfn_of(pa + i)) ? dom->code().code_byte(pa + i)
                                                               : std::byte{0})
      << i;
  std::byte one[1];
  auto err = s->read_physical((dom->info().max_gfn + 1) * drv::page_size, one);
  EXPECT_EQ(code_of(err), ec::gfn_out_of_range) << render(err);
  ASSERT_FALSE(s->detach());
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

// A guest whose module's page table is write-protected: the loader's stores and the walks'
// accessed-bit writes reach vmitap through Xen's ring, the walks' with in_page_walk (Xen's
// MEM_ACCESS_FAULT_IN_GPT) and the stores' without.
TEST_F(xen_driver_test, a_page_walk_request_keeps_its_flag_through_the_ring) {
  auto cfg = small_domain(1);
  cfg.workload.functions = 64;
  cfg.workload.module_functions = 32;
  cfg.module_interval = 2;
  auto made = hv->create_domain(cfg);
  ASSERT_TRUE(made) << render(made.error());
  dom = *made;
  open();
  auto s = attach();
  ASSERT_TRUE(s);
  auto v = s->create_view(drv::page_access::rwx);
  ASSERT_TRUE(v) << render(v.error());
  view = *v;
  ASSERT_FALSE(s->switch_all(view));
  std::vector<drv::access_change> tables;
  for (auto gfn : dom->layout().module_table_gfns)
    tables.push_back({gfn, drv::page_access::rx});
  ASSERT_FALSE(s->set_access(view, tables));
  auto ring = s->start_events();
  ASSERT_TRUE(ring);
  auto store_rip = dom->layout().kernel.va_of(dom->layout().loader_store_pa);
  size_t walks = 0, stores = 0;
  std::vector<drv::event> in(4);
  for (int round = 0; round < 2000 && (walks < 2 || stores < 2); ++round) {
    auto n = wait_and_take(**ring, in);
    ASSERT_GT(n, 0u) << "the guest stopped raising requests";
    std::vector<drv::response> out;
    for (size_t i = 0; i < n; ++i) {
      const auto& ev = in[i];
      ASSERT_EQ(ev.reason, drv::event_reason::mem_access);
      EXPECT_EQ(ev.mem.attempted, drv::page_access::w);
      EXPECT_THAT(dom->layout().module_table_gfns, ::testing::Contains(ev.mem.gfn));
      if (ev.mem.in_page_walk) {
        ++walks;
        EXPECT_EQ(ev.mem.gla, ev.regs.rip);
      } else {
        ++stores;
        EXPECT_EQ(ev.regs.rip, store_rip);
      }
      auto rsp = drv::make_response(ev);
      rsp.flags |= drv::flag::emulate;  // Xen writes it with the access the view lacks
      out.push_back(rsp);
    }
    auto r = (*ring)->give(out);
    ASSERT_EQ(r.failed, 0u) << render(r.first);
  }
  EXPECT_GE(walks, 2u);
  EXPECT_GE(stores, 2u);
  auto truth = dom->module_truth();
  EXPECT_GE(truth.accessed_bit_traps, walks);
  EXPECT_GE(truth.table_write_traps, stores);
  for (auto& c : tables)
    c.value = drv::page_access::rwx;
  ASSERT_FALSE(s->set_access(view, tables));
  ASSERT_FALSE(s->detach());
  expect_clean();
}
