// Captures end to end: the engine reads the arguments and strings of every call at a
// breakpoint on a function's entry while the VCPU is paused, and each record equals what the
// simulated caller passed (its ground truth), for both calling conventions and every step
// mode. The guest reuses its string buffers call after call, so a capture read after the
// answer would see the next call's string.

#include "tests/support/hit_records.hpp"
#include "tests/support/scenario.hpp"

#include <fstream>
#include <map>

using namespace vmitap;
using namespace vmitap::testing;

namespace {

struct params {
  drv::calling_convention abi;
  step_mode mode;
};

std::string hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", (unsigned long long)v);
  return buf;
}

/// For each argument of the function: its value, and for a string argument the string in
/// the encoding the signature gives.
capture_list captures_for(const sim::signature& sig, drv::calling_convention abi) {
  auto specs = std::make_shared<std::vector<capture_spec>>();
  for (unsigned i = 1; i <= sig.arity; ++i) {
    auto arg = "arg" + std::to_string(i);
    auto at = *parse_address_expr(arg, abi).expr;
    specs->push_back({"a" + std::to_string(i), capture_spec::kind::value, at, 0, arg});
    if (sig.kinds[i - 1] != sim::arg_kind::integer)
      specs->push_back({"s" + std::to_string(i),
                        sig.kinds[i - 1] == sim::arg_kind::ascii ? capture_spec::kind::ascii
                                                                 : capture_spec::kind::utf16,
                        at, sim::max_string_chars + 1, arg});
  }
  return {std::move(specs)};
}

class captures_e2e : public ::testing::TestWithParam<params> {};

TEST_P(captures_e2e, every_record_holds_the_arguments_and_strings_the_caller_passed) {
  auto [abi, mode] = GetParam();
  scenario s;
  auto hits_path = s.add_jsonl_sink("captures");

  sim::domain_config dc;
  dc.name = "win";
  dc.vcpus = 2;
  dc.instructions_per_vcpu = 150'000;
  dc.workload.seed = 77;
  dc.abi = abi;
  dc.record_calls = true;
  auto dom = *s.hv->create_domain(dc);
  s.domains.push_back(dom);

  // Breakpoints on the entries of the hottest functions that take a string.
  auto plan = std::make_shared<domain_plan>();
  plan->mode = mode;
  auto& sigs = dom->layout().signatures;
  std::map<std::string, uint64_t> entry_of;
  for (size_t f = 0; f < dom->code().functions().size() && entry_of.size() < 6; ++f) {
    auto& sig = sigs.at(f);
    bool has_string = false;
    for (unsigned i = 0; i < sig.arity; ++i)
      has_string |= sig.kinds[i] != sim::arg_kind::integer;
    if (!has_string)
      continue;
    auto name = "fn" + std::to_string(f);
    auto pa = dom->code().functions()[f].entry_pa;
    entry_of[name] = pa;
    plan->breakpoints.push_back(
      {{name, "main", {}, captures_for(sig, abi), {}, {}, {}}, breakpoint_target::physical(pa)});
  }
  ASSERT_GE(entry_of.size(), 3u) << "the workload has too few functions with strings";
  engine_config::domain_entry e;
  e.select.name = dc.name;
  e.plan = plan;
  e.sinks = {"hits"};
  s.cfg.domains.push_back(e);

  auto reports = s.run();
  ASSERT_TRUE(s.verified(reports));

  // The records of each (VCPU, breakpoint), in order, against the calls that VCPU set up.
  auto records = read_records(hits_path);
  uint64_t checked = 0, strings = 0, absent = 0;
  for (auto& [name, pa] : entry_of)
    for (uint32_t vcpu = 0; vcpu < dc.vcpus; ++vcpu) {
      auto calls = dom->calls(vcpu, pa);
      auto& recs = records[{vcpu, name}];
      // Every call reached is a hit; a VCPU that halted between setting a call up and
      // fetching its entry leaves one call without a hit.
      ASSERT_LE(recs.size(), calls.size()) << name << " vcpu " << vcpu;
      ASSERT_GE(recs.size() + 1, calls.size()) << name << " vcpu " << vcpu;
      for (size_t k = 0; k < recs.size(); ++k) {
        auto& r = recs[k];
        auto& c = calls[k];
        SCOPED_TRACE(name + " vcpu " + std::to_string(vcpu) + " call " + std::to_string(k));
        for (unsigned i = 1; i <= c.arity; ++i) {
          EXPECT_EQ(r["captures"]["a" + std::to_string(i)], hex(c.args[i - 1]));
          if (c.kinds[i - 1] == sim::arg_kind::integer)
            continue;
          auto key = "s" + std::to_string(i);
          if (c.mapped[i - 1]) {
            EXPECT_EQ(r["captures"][key], c.text[i - 1]);
            ++strings;
          } else {
            ASSERT_TRUE(r.contains("capture_errors")) << r.dump();
            EXPECT_EQ(r["capture_errors"][key]["cause"], "not_present");
            ++absent;
          }
        }
        ++checked;
      }
    }
  EXPECT_GT(checked, 100u);
  EXPECT_GT(strings, 50u);
  EXPECT_GT(absent, 0u) << "no string pointed into a page that is not present";
  std::printf("%llu records checked: %llu strings equal, %llu reported not present\n",
              (unsigned long long)checked, (unsigned long long)strings, (unsigned long long)absent);
}

INSTANTIATE_TEST_SUITE_P(
  every, captures_e2e,
  ::testing::Values(params{drv::calling_convention::sysv, step_mode::fast},
                    params{drv::calling_convention::sysv, step_mode::classic},
                    params{drv::calling_convention::sysv, step_mode::emulate},
                    params{drv::calling_convention::ms_x64, step_mode::fast},
                    params{drv::calling_convention::ms_x64, step_mode::classic},
                    params{drv::calling_convention::ms_x64, step_mode::emulate}),
  [](const auto& info) {
    return std::string(drv::to_string(info.param.abi) == std::string("sysv") ? "sysv" : "ms_x64") +
           "_" + to_string(info.param.mode);
  });

}  // namespace
