// The loadable module: kernel code whose pages are mapped by PTEs of their own and are absent
// at first, as a monitor that follows the module's page tables finds them.

#include "drivers/guest/kernel.hpp"
#include "drivers/guest/page_walker.hpp"
#include "drivers/guest/profile.hpp"
#include "tests/support/sim_fixture.hpp"

#include <algorithm>
#include <cstring>
#include <functional>
#include <set>
#include <thread>

using namespace vmitap;
using namespace vmitap::testing;
using drv::event_reason;
using drv::page_access;
namespace flag = drv::flag;
namespace pte = drv::pte;

namespace {

/// Half of 64 functions in the module: two or more pages of module code.
sim::domain_config with_module(uint32_t vcpus) {
  auto cfg = small_domain(vcpus);
  cfg.workload.functions = 64;
  cfg.workload.module_functions = 32;
  return cfg;
}

class sim_module : public sim_fixture {
protected:
  const sim::program& code() { return dom->code(); }
  const sim::guest_layout& layout() { return dom->layout(); }
  size_t module_pages() { return layout().module_ptes.size(); }
  uint64_t va_of(uint64_t pa) { return layout().kernel.va_of(pa); }
  uint64_t entry_va(uint32_t function) { return va_of(code().functions()[function].entry_pa); }

  uint64_t read64(uint64_t pa) {
    std::array<std::byte, 8> b{};
    auto err = session->read_physical(pa, b);
    EXPECT_FALSE(err) << render(err);
    uint64_t v;
    std::memcpy(&v, b.data(), 8);
    return v;
  }

  drv::translation translate(uint64_t va) {
    drv::page_walker walker{*session};  // one per look: the guest changes its tables
    return walker.translate(layout().processes[0].cr3, va);
  }

  /// The module page whose PTE is at `pa`, if one's is.
  std::optional<size_t> pte_index(uint64_t pa) {
    const auto& ptes = layout().module_ptes;
    auto i = std::find(ptes.begin(), ptes.end(), pa);
    if (i == ptes.end())
      return std::nullopt;
    return size_t(i - ptes.begin());
  }
};

TEST_F(sim_module, module_code_starts_a_page_of_its_own_and_its_size_is_checked) {
  boot(with_module(1));
  const auto& c = code();
  ASSERT_TRUE(c.has_module());
  EXPECT_EQ(c.first_module_function(), 32u);
  auto first = c.functions()[32].first;
  EXPECT_EQ(c.first_module_instruction(), first);
  EXPECT_EQ(c.at(first).pa & drv::page_mask, 0u) << "on a page boundary";
  EXPECT_EQ(drv::gfn_of(c.at(first).pa), c.first_module_gfn());
  EXPECT_EQ(c.last_module_gfn(), c.last_code_gfn());
  for (uint32_t i = 0; i < c.size(); ++i) {
    ASSERT_EQ(c.in_module(i), i >= first);
    ASSERT_EQ(c.is_module_gfn(drv::gfn_of(c.at(i).pa)), c.in_module(i))
      << "module pages hold module code only";
  }
  for (uint32_t f = 0; f < c.functions().size(); ++f)
    EXPECT_EQ(c.is_module_function(f), f >= 32u);
  EXPECT_GE(module_pages(), 2u);
  EXPECT_EQ(module_pages(), c.last_module_gfn() - c.first_module_gfn() + 1);
  EXPECT_FALSE(c.is_module_gfn(c.last_data_gfn())) << "data pages follow, not the module's";
  EXPECT_LT(layout().kernel.syscall_entry, c.first_module_function())
    << "MSR_LSTAR always translates";
  EXPECT_EQ(layout().kernel.function_names[layout().kernel.syscall_entry], "entry_SYSCALL_64");

  auto cfg = with_module(1);
  cfg.workload.module_functions = cfg.workload.functions;
  auto err = sim::domain::validate(cfg);
  EXPECT_EQ(code_of(err), ec::invalid_argument);
  EXPECT_NE(render(err).find("module_functions"), std::string::npos) << render(err);

  auto plain = sim::prepare_guest(small_domain(1));
  ASSERT_TRUE(plain);
  EXPECT_FALSE(plain->code.has_module());
  EXPECT_EQ(plain->code.first_module_instruction(), plain->code.size());
  EXPECT_FALSE(plain->code.is_module_gfn(plain->code.first_code_gfn()));
  EXPECT_TRUE(plain->guest.layout.module_ptes.empty());
  EXPECT_TRUE(plain->guest.layout.module_table_gfns.empty());
}

TEST_F(sim_module, module_pages_are_mapped_by_ptes_of_their_own_not_present_at_boot) {
  boot(with_module(1));
  auto f = code().first_module_function() + 3;
  auto pa = code().functions()[f].entry_pa;
  auto entry = layout().module_pte_pa(drv::gfn_of(pa));
  ASSERT_EQ(layout().module_table_gfns.size(), 1u);
  EXPECT_EQ(drv::gfn_of(entry), layout().module_table_gfns[0]) << "a table of its own";
  auto t = translate(entry_va(f));
  EXPECT_EQ(t.fault, drv::translation_fault::not_present);
  EXPECT_EQ(t.level, 1u) << "the PTE itself";
  EXPECT_EQ(t.entry_pa, entry);
  EXPECT_EQ(read64(entry) & pte::address_mask, drv::pa_of(drv::gfn_of(pa))) << "frame kept";
  // The region's other pages are present (accessed already); other regions keep 2 MiB pages.
  t = translate(entry_va(0));
  ASSERT_TRUE(t);
  EXPECT_EQ(t.level, 1u);
  EXPECT_EQ(t.pa, code().functions()[0].entry_pa);
  EXPECT_TRUE(read64(t.entry_pa) & pte::accessed);
  t = translate(va_of(drv::pa_of(layout().last_reserved_gfn)));
  ASSERT_TRUE(t);
  EXPECT_EQ(t.level, 2u);
}

TEST_F(sim_module, the_kernel_is_found_with_its_module_out_and_module_symbols_name_their_pages) {
  for (auto abi : {drv::calling_convention::sysv, drv::calling_convention::ms_x64}) {
    auto cfg = with_module(2);
    cfg.abi = abi;
    boot(cfg);
    auto json = sim::kernel_profile_json(cfg);
    ASSERT_TRUE(json) << render(json.error());
    auto profile = drv::parse_profile(*json, "sim-module.json");
    ASSERT_TRUE(profile) << render(profile.error());
    ASSERT_FALSE(session->pause());
    auto k = drv::locate_kernel(*session, *profile, cfg.vcpus);
    ASSERT_TRUE(k) << render(k.error());
    for (auto f = code().first_module_function(); f < code().functions().size(); ++f) {
      auto value = profile->symbol(layout().kernel.function_names[f]);
      ASSERT_TRUE(value) << layout().kernel.function_names[f];
      EXPECT_EQ(k->va_of(*value), entry_va(f));
      auto t = translate(entry_va(f));
      EXPECT_EQ(t.fault, drv::translation_fault::not_present);
      EXPECT_EQ(t.entry_pa, layout().module_pte_pa(drv::gfn_of(code().functions()[f].entry_pa)));
    }
    ASSERT_FALSE(session->resume());
    ASSERT_FALSE(session->detach());
  }
}

}  // namespace
