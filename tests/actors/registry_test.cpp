// The breakpoint registry and the EPT controller together, deterministically, on a sim
// domain: batching, refcounted pages, exact restores, and every request answered on every
// path, failures included.

#include "tests/support/actor_fixture.hpp"

using namespace vmitap;
using namespace vmitap::testing;
using drv::page_access;

namespace {

class registry_test : public registry_fixture {
protected:
  uint64_t pa(size_t page, uint64_t offset = 0) {
    return drv::pa_of(dom->code().first_code_gfn() + page, offset);
  }
  /// Sends `body`'s requests back to back (no message runs in between), then runs.
  template <class F>
  void together(F body) {
    spawn_client(body);
    run();
  }
};

}  // namespace

TEST_F(registry_test, a_batch_of_breakpoints_is_one_read_and_one_write) {
  boot_registry();
  std::vector<breakpoint_def> specs;
  for (size_t i = 0; i < 100; ++i)
    specs.push_back(spec("bp" + std::to_string(i), pa(i % 4, i * 8)));
  auto before = dom->calls();
  auto r = add(specs);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->ok, 100u);
  EXPECT_TRUE(r->failed.empty());
  EXPECT_EQ(dom->calls().get_access - before.get_access, 1u);
  EXPECT_EQ(dom->calls().set_access - before.set_access, 1u);
  EXPECT_EQ(domain->counters().access_ok.get(), 4u) << "four pages";
  auto table = domain->table().load();
  EXPECT_EQ(table->breakpoints_per_view[view], 100u);
  EXPECT_EQ(table->pages_per_view[view], 4u);
}

TEST_F(registry_test, two_breakpoints_on_a_page_restore_the_previous_access_not_rwx) {
  auto dc = small_domain(2);
  dc.code_access = page_access::rx;
  boot_registry(dc);
  ASSERT_EQ(add({spec("a", pa(0, 0))})->ok, 1u);
  ASSERT_EQ(add({spec("b", pa(0, 8))})->ok, 1u);
  EXPECT_EQ(access_of(pa(0)), page_access::r) << "Execute removed, read kept";
  ASSERT_EQ(remove({"a"})->ok, 1u);
  EXPECT_EQ(access_of(pa(0)), page_access::r) << "still monitored for b";
  ASSERT_EQ(remove({"b"})->ok, 1u);
  EXPECT_EQ(access_of(pa(0)), page_access::rx) << "the access it had before, not rwx";
  auto again = remove({"b"});
  ASSERT_EQ(again->failed.size(), 1u);
  EXPECT_EQ(code_of(again->failed[0].second), ec::breakpoint_not_found);
}

// The teardown watchdog's report comes from the watch: it lists exactly the pages the
// controller has changed now, by view, whatever the controller's actor is doing.
TEST_F(registry_test, the_teardown_watch_lists_the_pages_changed_now) {
  boot_registry();
  EXPECT_NE(watch->describe().find("no page is left changed"), std::string::npos);
  ASSERT_EQ(add({spec("a", pa(0)), spec("b", pa(2)), spec("c", pa(2, 8))})->ok, 3u);
  char expected[96];
  std::snprintf(expected, sizeof expected, "pages still changed: view %u: %#llx %#llx",
                unsigned(view), (unsigned long long)drv::gfn_of(pa(0)),
                (unsigned long long)drv::gfn_of(pa(2)));
  EXPECT_NE(watch->describe().find(expected), std::string::npos) << watch->describe();
  ASSERT_EQ(remove({"a", "b"})->ok, 2u);
  std::snprintf(expected, sizeof expected, "pages still changed: view %u: %#llx", unsigned(view),
                (unsigned long long)drv::gfn_of(pa(2)));
  EXPECT_NE(watch->describe().find(expected), std::string::npos) << "c keeps its page";
  ASSERT_EQ(remove({"c"})->ok, 1u);
  EXPECT_NE(watch->describe().find("no page is left changed"), std::string::npos)
    << watch->describe();
}

TEST_F(registry_test, a_failing_write_arms_the_applied_prefix_and_reports_the_rest) {
  boot_registry();
  dom->fail_access_changes(1, 1, EIO);  // the batch applies one page, then fails
  auto r = add({spec("bp0", pa(0)), spec("bp1", pa(1)), spec("bp2", pa(2))});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->ok, 1u) << "applied before the failure: armed";
  ASSERT_EQ(r->failed.size(), 2u);
  for (auto& [name, why] : r->failed)
    EXPECT_EQ(errno_of(why), EIO) << name << ": " << render(why);
  auto listed = *ask<std::vector<breakpoint_ptr>>(registry, list_atom_v);
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0]->name, "bp0");
  EXPECT_EQ(access_of(pa(0)), page_access::rw);
  EXPECT_EQ(access_of(pa(1)), page_access::rwx) << "the registry and the guest agree";
  EXPECT_EQ(domain->counters().access_failed.get(), 2u);
  EXPECT_EQ(domain->table().load()->pages_per_view[view], 1u);
}

// Regression (issue 8): when the read-back after a failed write failed too, the controller
// counted the whole batch as not applied, so a page the write had changed was never restored.
TEST_F(registry_test, a_page_of_unknown_state_is_written_again_when_asked_and_restored_at_clear) {
  boot_registry();
  dom->fail_access_changes(1, 1, EIO);  // page 0 changes, then the call fails
  dom->fail_access_reads(1, 1, EIO);    // and reading back what was applied fails too
  auto r = add({spec("bp0", pa(0)), spec("bp1", pa(1))});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->ok, 0u) << "nothing is known to be armed";
  ASSERT_EQ(r->failed.size(), 2u);
  EXPECT_EQ(errno_of(r->failed[0].second), EIO) << render(r->failed[0].second);
  EXPECT_EQ(access_of(pa(0)), page_access::rw) << "the guest has it, the registry does not know";
  auto again = add({spec("bp0", pa(0))});
  ASSERT_TRUE(again);
  EXPECT_EQ(again->ok, 1u) << "written again, now known";
  ASSERT_TRUE(ask<ok_atom>(registry, clear_atom_v));
  EXPECT_EQ(access_of(pa(0)), page_access::rwx);
  EXPECT_EQ(access_of(pa(1)), page_access::rwx);
}

TEST_F(registry_test, a_page_whose_state_is_unknown_is_restored_by_the_controllers_teardown) {
  boot_registry();
  dom->fail_access_changes(1, 1, EIO);
  dom->fail_access_reads(1, 1, EIO);
  ASSERT_TRUE(add({spec("bp0", pa(0)), spec("bp1", pa(1))}));
  ASSERT_EQ(access_of(pa(0)), page_access::rw);
  ASSERT_TRUE(ask<ok_atom>(controller, teardown_atom_v));
  EXPECT_EQ(dom->check().pages_changed, 0u)
    << "restored before its view went, although nobody knew it had changed";
}

TEST_F(registry_test, invalid_breakpoints_are_rejected_with_their_reason_and_the_rest_armed) {
  boot_registry();
  auto r =
    add({spec("x", pa(0)), spec("x", pa(1)), spec("far", drv::pa_of(dom->info().max_gfn + 1)),
         breakpoint_def::at("v0", pa(2), "unmonitored"), spec("ok", pa(3))});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->ok, 2u);
  ASSERT_EQ(r->failed.size(), 3u);
  EXPECT_EQ(code_of(r->failed[0].second), ec::duplicate_breakpoint);
  EXPECT_EQ(code_of(r->failed[1].second), ec::gfn_out_of_range);
  EXPECT_EQ(code_of(r->failed[2].second), ec::no_such_view);
}

// Regression (issue 8): an add waiting on a page whose restore then fails was never answered.
TEST_F(registry_test, an_add_waiting_on_a_page_whose_restore_fails_is_answered) {
  boot_registry();
  ASSERT_EQ(add({spec("a", pa(0))})->ok, 1u);
  dom->fail_access_changes(1, 0, EIO);  // the restore of page 0 fails
  std::optional<caf::expected<batch_result>> removed, added;
  together([&](caf::event_based_actor* self) {
    self
      ->request(caf::actor_cast<caf::actor>(registry), std::chrono::seconds(10), remove_atom_v,
                std::vector<std::string>{"a"})
      .then([&](batch_result& r) { removed = r; }, [&](caf::error& e) { removed = e; });
    self
      ->request(caf::actor_cast<caf::actor>(registry), std::chrono::seconds(10), add_atom_v,
                std::vector<breakpoint_def>{spec("b", pa(0, 16))}, armed_by::attach)
      .then([&](batch_result& r) { added = r; }, [&](caf::error& e) { added = e; });
  });
  ASSERT_TRUE(removed && *removed);
  ASSERT_TRUE(added && *added);
  EXPECT_EQ((*added)->ok, 1u) << "the page stayed monitored: b is armed";
  EXPECT_EQ(access_of(pa(0)), page_access::rw);
}

// Regression (issue 8): an add whose page a clear emptied was never answered.
TEST_F(registry_test, an_add_that_a_clear_overtakes_is_answered) {
  boot_registry();
  std::optional<caf::expected<batch_result>> added;
  std::optional<caf::expected<ok_atom>> cleared;
  together([&](caf::event_based_actor* self) {
    self
      ->request(caf::actor_cast<caf::actor>(registry), std::chrono::seconds(10), add_atom_v,
                std::vector<breakpoint_def>{spec("a", pa(0))}, armed_by::attach)
      .then([&](batch_result& r) { added = r; }, [&](caf::error& e) { added = e; });
    self->request(caf::actor_cast<caf::actor>(registry), std::chrono::seconds(10), clear_atom_v)
      .then([&](ok_atom x) { cleared = x; }, [&](caf::error& e) { cleared = e; });
  });
  ASSERT_TRUE(added && *added);
  ASSERT_EQ((*added)->failed.size(), 1u);
  EXPECT_EQ(code_of((*added)->failed[0].second), ec::breakpoint_not_found)
    << render((*added)->failed[0].second) << ": removed before it was armed";
  ASSERT_TRUE(cleared && *cleared);
  EXPECT_EQ(access_of(pa(0)), page_access::rwx);
}

TEST_F(registry_test, a_clear_whose_restore_fails_says_which_page_and_a_later_clear_retries) {
  boot_registry();
  ASSERT_EQ(add({spec("a", pa(0)), spec("b", pa(1))})->ok, 2u);
  dom->fail_access_changes(1, 1, EIO);
  auto first = ask<ok_atom>(registry, clear_atom_v);
  ASSERT_FALSE(first);
  EXPECT_NE(render(first.error()).find("could not be restored"), std::string::npos)
    << render(first.error());
  EXPECT_TRUE(ask<ok_atom>(registry, clear_atom_v)) << "the failed page is tried again";
  EXPECT_EQ(access_of(pa(0)), page_access::rwx);
  EXPECT_EQ(access_of(pa(1)), page_access::rwx);
}

TEST_F(registry_test, removing_and_adding_in_one_round_publishes_one_table) {
  boot_registry();
  ASSERT_EQ(add({spec("a", pa(0)), spec("b", pa(1))})->ok, 2u);
  auto v0 = domain->table().version();
  auto r = add({spec("c", pa(2)), spec("d", pa(3)), spec("e", pa(3, 8))});
  ASSERT_EQ(r->ok, 3u);
  EXPECT_EQ(domain->table().version(), v0 + 1) << "one publish for the batch";
  auto t = domain->table().load();
  std::vector<breakpoint_ptr> at;
  breakpoints_at(t->find(view, drv::gfn_of(pa(3))), 8, at);
  ASSERT_EQ(at.size(), 1u);
  EXPECT_EQ(at[0]->name, "e");
}

TEST(breakpoint_table, a_new_version_shares_the_shards_it_did_not_change) {
  table_builder b{{1}};
  for (int i = 0; i < 200; ++i) {
    b.add(make_breakpoint(breakpoint_def::at("bp" + std::to_string(i), drv::pa_of(0x100 + i)), 1,
                          armed_by::attach));
  }
  auto t1 = b.build();
  auto bp = make_breakpoint(breakpoint_def::at("extra", drv::pa_of(0x100, 4)), 1, armed_by::attach);
  b.add(bp);
  auto t2 = b.build();
  size_t shared = 0;
  for (size_t s = 0; s < breakpoint_table::shard_count; ++s)
    shared += t1->shards[s] == t2->shards[s];
  EXPECT_EQ(shared, breakpoint_table::shard_count - 1);
  EXPECT_EQ(t2->breakpoints_per_view[1], 201u);
  EXPECT_EQ(t1->find(1, 0x100).size(), 1u) << "the old version is unchanged";
  EXPECT_EQ(t2->find(1, 0x100).size(), 2u);
  EXPECT_TRUE(b.remove(bp.get()));
  EXPECT_FALSE(b.remove(bp.get()));
  EXPECT_EQ(b.build()->find(1, 0x100).size(), 1u);
}

TEST_F(registry_test, a_breakpoint_over_its_rate_limit_is_disarmed_for_its_cool_down_then_rearmed) {
  boot_registry();
  auto limited = spec("limited", pa(0, 8));
  limited.options.limit = {10, std::chrono::milliseconds(500)};
  ASSERT_EQ(add({limited, spec("other", pa(1))})->ok, 2u);
  auto before = access_of(pa(0));
  auto entries = domain->table().load()->find(view, drv::gfn_of(pa(0)));
  ASSERT_EQ(entries.size(), 1u);
  auto bp = entries[0].bp;
  ASSERT_TRUE(bp->limiter());

  caf::anon_send(registry, suppress_atom_v, bp);
  caf::anon_send(registry, suppress_atom_v, bp);  // twice: one suppression
  run();                                          // everything but the cool-down's end
  EXPECT_TRUE(domain->table().load()->find(view, drv::gfn_of(pa(0))).empty());
  EXPECT_TRUE(allows(access_of(pa(0)), page_access::x)) << "its page is restored";
  EXPECT_FALSE(allows(access_of(pa(1)), page_access::x)) << "the other stays armed";
  EXPECT_EQ(bp->limiter()->suppressions(), 1u);
  ASSERT_EQ(domain->out_of_table().size(), 1u);
  auto listed = ask<std::vector<breakpoint_ptr>>(registry, list_atom_v);
  ASSERT_TRUE(listed);
  EXPECT_EQ(listed->size(), 2u) << "a suppressed breakpoint is still listed";
  auto dup = add({spec("limited", pa(2))});
  ASSERT_EQ(dup->failed.size(), 1u) << "and its name is still taken";

  run(std::chrono::milliseconds(499));
  EXPECT_TRUE(domain->table().load()->find(view, drv::gfn_of(pa(0))).empty())
    << "still cooling down at 499 ms";
  run(std::chrono::milliseconds(1));  // the cool-down ends at 500 ms
  auto back = domain->table().load()->find(view, drv::gfn_of(pa(0)));
  ASSERT_EQ(back.size(), 1u);
  EXPECT_EQ(back[0].bp, bp) << "the same breakpoint, hits and all";
  EXPECT_EQ(access_of(pa(0)), before);
  EXPECT_TRUE(domain->out_of_table().empty());
  EXPECT_FALSE(bp->limiter()->over(std::chrono::steady_clock::now()))
    << "re-armed: a new window counts from its next hit";
}

TEST_F(registry_test, a_breakpoint_removed_during_its_cool_down_is_not_rearmed) {
  boot_registry();
  auto limited = spec("limited", pa(0, 8));
  limited.options.limit = {1, std::chrono::milliseconds(500)};
  ASSERT_EQ(add({limited})->ok, 1u);
  auto bp = domain->table().load()->find(view, drv::gfn_of(pa(0)))[0].bp;
  caf::anon_send(registry, suppress_atom_v, bp);
  run();
  auto r = remove({"limited"});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->ok, 1u);
  run(std::chrono::milliseconds(500));  // the cool-down ends after the removal
  EXPECT_TRUE(domain->table().load()->find(view, drv::gfn_of(pa(0))).empty());
  EXPECT_TRUE(allows(access_of(pa(0)), page_access::x));
  EXPECT_TRUE(domain->out_of_table().empty());
  ASSERT_EQ(add({spec("limited", pa(0, 8))})->ok, 1u) << "its name is free again";
}

TEST(rate_limiter, the_hit_over_the_limit_asks_once_and_a_new_window_starts_after_a_second) {
  rate_limiter limiter{{3, std::chrono::milliseconds(100)}};
  auto t0 = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
  for (int i = 0; i < 3; ++i)
    EXPECT_FALSE(limiter.over(t0));
  // A second later the window starts again: three more are within the limit.
  auto t1 = t0 + std::chrono::seconds(1);
  for (int i = 0; i < 3; ++i)
    EXPECT_FALSE(limiter.over(t1 + std::chrono::milliseconds(i)));
  EXPECT_TRUE(limiter.over(t1 + std::chrono::milliseconds(500))) << "the fourth in one second";
  for (int i = 0; i < 100; ++i)
    EXPECT_FALSE(limiter.over(t1 + std::chrono::milliseconds(501))) << "asked already";
  limiter.rearmed();
  auto t2 = t1 + std::chrono::milliseconds(700);
  for (int i = 0; i < 3; ++i)
    EXPECT_FALSE(limiter.over(t2)) << "a new window from the first hit after the re-arm";
  EXPECT_TRUE(limiter.over(t2));
}

namespace {

/// Records the releases a registry gives after walking.
struct release_log : held_responses {
  std::vector<std::pair<drv::vcpu_id, uint64_t>> released;
  void decided(drv::vcpu_id vcpu, uint64_t token, std::optional<handler_decision> d) override {
    EXPECT_FALSE(d) << "a walk resumes the VCPU as it was";
    released.emplace_back(vcpu, token);
  }
};

breakpoint_def virtual_at(std::string name, uint64_t va) {
  breakpoint_def def;
  def.options.name = std::move(name);
  def.options.view = "main";
  def.target.by = breakpoint_target::kind::virtual_address;
  def.target.va = va;
  return def;
}

}  // namespace

// A virtual address whose page is not mapped is pending: kept by name, in no table, its clear
// entry's table page write-protected; one mapped by a 4 KiB page is armed and its leaf's table
// watched; a removal gives every page back what it had.
TEST_F(registry_test, virtual_breakpoints_are_armed_or_pending_and_their_page_tables_watched) {
  boot_registry();
  auto cr3 = kernel_cr3();
  ASSERT_NE(cr3, 0u);
  auto& process = dom->layout().processes[dom->vcpu_process(0)];
  ASSERT_EQ(process.cr3, cr3);
  auto& stack = dom->layout().vcpus[0];
  drv::page_walker walker{*shared};
  auto unmapped = walker.translate(cr3, process.unmapped_va);
  ASSERT_EQ(unmapped.fault, drv::translation_fault::not_present);
  auto mapped = walker.translate(cr3, stack.stack_low);
  ASSERT_TRUE(mapped);
  auto r = add({virtual_at("pending", process.unmapped_va + 0x10),
                virtual_at("armed", stack.stack_low + 0x20)});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->ok, 2u);
  EXPECT_TRUE(r->failed.empty());
  EXPECT_EQ(domain->counters().pending.load(), 1u);
  auto table = domain->table().load();
  EXPECT_EQ(table->breakpoints_per_view[view], 1u) << "the pending one is in no table";
  EXPECT_TRUE(table->watching(drv::gfn_of(unmapped.entry_pa)));
  EXPECT_TRUE(table->watching(drv::gfn_of(mapped.entry_pa)));
  EXPECT_EQ(access_of(unmapped.entry_pa), page_access::rx) << "its table lost Write";
  EXPECT_EQ(access_of(mapped.pa), page_access::rw) << "the armed one's page lost Execute";
  auto listed = ask<std::vector<breakpoint_ptr>>(registry, list_atom_v);
  ASSERT_TRUE(listed);
  ASSERT_EQ(listed->size(), 2u);
  for (auto& bp : *listed)
    EXPECT_EQ(bp->pending(), bp->name == "pending") << bp->name;
  ASSERT_EQ(domain->out_of_table().size(), 1u);

  // A write to a watched table that moves nothing: the VCPU is released all the same.
  auto log = std::make_shared<release_log>();
  caf::anon_send(registry, walk_atom_v,
                 table_write{drv::gfn_of(unmapped.entry_pa), cr3, true, 1, 7, log});
  run();
  ASSERT_EQ(log->released.size(), 1u);
  EXPECT_EQ(log->released[0], std::make_pair(drv::vcpu_id{1}, uint64_t{7}));

  auto gone = remove({"pending", "armed"});
  ASSERT_TRUE(gone);
  EXPECT_EQ(gone->ok, 2u);
  EXPECT_EQ(access_of(unmapped.entry_pa), page_access::rwx);
  EXPECT_EQ(access_of(mapped.entry_pa), page_access::rwx);
  EXPECT_EQ(access_of(mapped.pa), page_access::rwx);
  EXPECT_EQ(domain->counters().pending.load(), 0u);
  EXPECT_FALSE(domain->table().load()->watched);
}

// A virtual breakpoint that cannot be armed goes entirely: its name is free again and its
// page table is no longer watched.
TEST_F(registry_test, a_virtual_breakpoint_that_fails_to_arm_leaves_no_watch_behind) {
  boot_registry();
  auto cr3 = kernel_cr3();
  auto& stack = dom->layout().vcpus[0];
  drv::page_walker walker{*shared};
  auto mapped = walker.translate(cr3, stack.stack_low);
  ASSERT_TRUE(mapped);
  dom->fail_access_changes(1, 0, EIO);
  auto r = add({virtual_at("armed", stack.stack_low + 0x20)});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->ok, 0u);
  ASSERT_EQ(r->failed.size(), 1u);
  run();
  EXPECT_FALSE(domain->table().load()->watched);
  EXPECT_EQ(access_of(mapped.entry_pa), page_access::rwx);
  EXPECT_EQ(access_of(mapped.pa), page_access::rwx);
  auto listed = ask<std::vector<breakpoint_ptr>>(registry, list_atom_v);
  ASSERT_TRUE(listed);
  EXPECT_TRUE(listed->empty());
  auto again = add({virtual_at("armed", stack.stack_low + 0x20)});
  ASSERT_TRUE(again);
  EXPECT_EQ(again->ok, 1u) << "its name is free";
}
