// Captures: the address expression language, the page walk (4 KiB, 2 MiB and 1 GiB pages,
// entries not present, non-canonical addresses) and reading values, bytes and strings, over a
// guest memory the test lays out by hand.

#include "actors/model/captures.hpp"
#include "tests/support/memory_session.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <map>

using namespace vmitap;
using drv::translation_fault;
using vmitap::testing::memory_session;

namespace {

// The layout: PML4 at 0x1000 (cr3), user PDPT 0x2000 → PD 0x3000 → PT 0x4000; kernel PDPT
// at 0x5000 with a 1 GiB page, and a PD at 0x6000 with a 2 MiB page.
constexpr uint64_t cr3 = 0x1000;
constexpr uint64_t p = drv::pte::present | drv::pte::writable;
constexpr uint64_t user_va = 0x0000'7ffd'0000'0000ULL;  // PML4 255, PDPT 500, PD 0
constexpr uint64_t big_va = 0xffff'ff80'0000'0000ULL;   // PML4 511, PDPT 0 (1 GiB page)
constexpr uint64_t mid_va = 0xffff'ff80'4000'0000ULL;   // PML4 511, PDPT 1 → PD, 2 MiB pages

class captures_test : public ::testing::Test {
protected:
  void SetUp() override {
    mem.write64(cr3 + 8 * drv::table_index(user_va, 4), 0x2000 | p | drv::pte::user);
    mem.write64(0x2000 + 8 * drv::table_index(user_va, 3), 0x3000 | p | drv::pte::user);
    mem.write64(0x3000 + 8 * drv::table_index(user_va, 2), 0x4000 | p | drv::pte::user);
    // User pages 0 and 1 present (at pa 0x10000 and 0x20000: not contiguous), page 2 not.
    mem.write64(0x4000 + 0, 0x10000 | p | drv::pte::user);
    mem.write64(0x4000 + 8, 0x20000 | p | drv::pte::user);
    mem.write64(0x4000 + 16, 0x30000 | drv::pte::user);  // present bit clear
    mem.write64(cr3 + 8 * 511, 0x5000 | p);
    mem.write64(0x5000 + 0, 0x4000'0000 | p | drv::pte::large);  // never mind RAM: one GiB
    mem.write64(0x5000 + 8, 0x6000 | p);
    mem.write64(0x6000 + 8 * 1, 0x0020'0000 | p | drv::pte::large);  // 2 MiB at pa 2 MiB
  }

  drv::registers regs(uint64_t rsp = user_va + 0x100) {
    drv::registers r;
    r.cr3 = cr3;
    r.rsp = rsp;
    return r;
  }

  capture_spec spec(std::string expr, capture_spec::kind k = capture_spec::kind::value,
                    uint32_t length = 0,
                    drv::calling_convention cc = drv::calling_convention::sysv) {
    auto parsed = parse_address_expr(expr, cc);
    EXPECT_TRUE(parsed.expr) << expr << ": " << parsed.error;
    return {expr, k, parsed.expr.value_or(address_expr{}), length, expr};
  }

  capture_value one(const capture_spec& s, const drv::registers& r) {
    drv::page_walker walker{mem};
    return evaluate({s}, r, walker).at(0);
  }

  memory_session mem;
};

TEST(address_expr_test, registers_arguments_offsets_and_loads_compile_as_written) {
  using step = address_expr::step;
  auto sysv = drv::calling_convention::sysv;
  auto ms = drv::calling_convention::ms_x64;
  EXPECT_EQ(parse_address_expr("rdi", sysv).expr->base, &drv::registers::rdi);
  EXPECT_EQ(parse_address_expr("arg2", sysv).expr->base, &drv::registers::rsi);
  EXPECT_EQ(parse_address_expr("arg2", ms).expr->base, &drv::registers::rdx);
  EXPECT_EQ(parse_address_expr("arg4", ms).expr->base, &drv::registers::r9);
  // Stack arguments: past the return address, and for Microsoft x64 its 32-byte shadow space.
  auto arg5 = *parse_address_expr("arg5", ms).expr;
  EXPECT_EQ(arg5, *parse_address_expr("[rsp+0x28]", ms).expr);
  EXPECT_EQ(arg5.steps, (std::vector<step>{{step::op::add, 0x28}, {step::op::load, 0}}));
  EXPECT_EQ(*parse_address_expr("arg7", sysv).expr, *parse_address_expr("[ rsp + 8 ]", sysv).expr);
  EXPECT_EQ(*parse_address_expr("arg8", sysv).expr, *parse_address_expr("[rsp+16]", sysv).expr);
  auto nested = *parse_address_expr("[[rcx+8]-0x10]+4", sysv).expr;
  EXPECT_EQ(nested.base, &drv::registers::rcx);
  EXPECT_EQ(nested.steps, (std::vector<step>{{step::op::add, 8},
                                             {step::op::load, 0},
                                             {step::op::add, uint64_t(0) - 0x10},
                                             {step::op::load, 0},
                                             {step::op::add, 4}}));
  auto constant = *parse_address_expr("[0xffffffff80001000]", sysv).expr;
  EXPECT_EQ(constant.base, nullptr);
  EXPECT_EQ(constant.constant, 0xffffffff80001000ULL);
}

TEST(address_expr_test, errors_name_the_problem_and_its_offset) {
  auto sysv = drv::calling_convention::sysv;
  auto err = [&](std::string_view text) {
    auto r = parse_address_expr(text, sysv);
    EXPECT_FALSE(r.expr) << text;
    return std::pair{r.error, r.offset};
  };
  EXPECT_EQ(err("foo").second, 0u);
  EXPECT_NE(err("foo").first.find("unknown register \"foo\""), std::string::npos);
  EXPECT_EQ(err("[rsp+0x28").second, 9u);
  EXPECT_EQ(err("[rsp+0x28").first, "expected \"]\"");
  EXPECT_EQ(err("rsp + ").second, 6u);
  EXPECT_EQ(err("rsp+rax").first, "expected a number after \"+\"");
  EXPECT_EQ(err("arg0").first, "argument numbers go from arg1 to arg16");
  EXPECT_EQ(err("arg17").second, 0u);
  EXPECT_EQ(err("rdi rsi").second, 4u);
  EXPECT_EQ(err("").first, "expected a register, argN, a number or \"[\"");
  EXPECT_EQ(err("0xfffffffffffffffff").first.substr(0, 16), "unknown register");
  // Found by fuzz_captures: a long run of "[" overflowed the stack of the recursive parser.
  EXPECT_EQ(err(std::string(100000, '[')).first, "brackets nest at most 16 deep");
  EXPECT_EQ(err(std::string(100000, '[')).second, 16u);
  EXPECT_TRUE(parse_address_expr(std::string(16, '[') + "rsp" + std::string(16, ']'),
                                 drv::calling_convention::sysv)
                .expr);
}

TEST_F(captures_test, translation_follows_4k_2m_and_1g_pages_and_reports_where_it_stops) {
  drv::page_walker walker{mem};
  EXPECT_EQ(walker.translate(cr3, user_va + 0x123).pa, 0x10123u);
  EXPECT_EQ(walker.translate(cr3, user_va + 0x1ff8).pa, 0x20ff8u);
  EXPECT_EQ(walker.translate(cr3, big_va + 0x12345678).pa, 0x4000'0000u + 0x12345678u);
  EXPECT_EQ(walker.translate(cr3, mid_va + 0x20'0000 + 0x1abcd).pa, 0x20'0000u + 0x1abcdu);
  auto absent = walker.translate(cr3, user_va + 0x2010);
  EXPECT_EQ(absent.fault, translation_fault::not_present);
  EXPECT_EQ(absent.level, 1);
  auto no_pd = walker.translate(cr3, mid_va);  // PD entry 0 of the kernel PD is empty
  EXPECT_EQ(no_pd.fault, translation_fault::not_present);
  EXPECT_EQ(no_pd.level, 2);
  auto no_pml4e = walker.translate(cr3, 0x1000);
  EXPECT_EQ(no_pml4e.fault, translation_fault::not_present);
  EXPECT_EQ(no_pml4e.level, 4);
  EXPECT_EQ(walker.translate(cr3, 0x0000'8000'0000'0000ULL).fault,
            translation_fault::non_canonical);
  // A table outside RAM: the walk says so instead of reading garbage.
  EXPECT_EQ(walker.translate(0x7fff'f000'0000ULL, user_va).fault, translation_fault::not_ram);
}

TEST_F(captures_test, a_walker_reads_each_table_entry_once_per_pause) {
  drv::page_walker walker{mem};
  ASSERT_TRUE(walker.translate(cr3, user_va));
  auto after_first = mem.reads;
  EXPECT_EQ(after_first, 4u);
  ASSERT_TRUE(walker.translate(cr3, user_va + 0x800));
  EXPECT_EQ(mem.reads, after_first);  // all four entries came from the cache
  // A new pause, a new walker: a guest that changed its tables is seen as it is now.
  mem.write64(0x4000, 0x50000 | p);
  drv::page_walker next{mem};
  EXPECT_EQ(next.translate(cr3, user_va).pa, 0x50000u);
}

TEST_F(captures_test, values_bytes_and_stack_arguments_read_through_the_tables) {
  // A Microsoft x64 call: return address at [rsp], shadow space, arg5 at [rsp+0x28].
  auto r = regs();
  mem.write64(0x10100, 0xffffffff80001234ULL);
  mem.write64(0x10128, 0x5555);
  r.rcx = 0xabc;
  auto ms = drv::calling_convention::ms_x64;
  EXPECT_EQ(text_of(one(spec("arg1", capture_spec::kind::value, 0, ms), r)), "0xabc");
  EXPECT_EQ(text_of(one(spec("arg5", capture_spec::kind::value, 0, ms), r)), "0x5555");
  EXPECT_EQ(text_of(one(spec("[rsp]"), r)), "0xffffffff80001234");
  uint8_t header[] = {0x4d, 0x5a, 0x90, 0x00};
  mem.write(0x10200, header, sizeof header);
  r.rsi = user_va + 0x200;
  EXPECT_EQ(one(spec("rsi", capture_spec::kind::bytes, 4), r).text, "4d5a9000");
  // Bytes across two pages that are not contiguous in RAM.
  uint8_t tail[] = {1, 2}, head[] = {3, 4};
  mem.write(0x10ffe, tail, 2);
  mem.write(0x20000, head, 2);
  r.rsi = user_va + 0xffe;
  EXPECT_EQ(one(spec("rsi", capture_spec::kind::bytes, 4), r).text, "01020304");
}

TEST_F(captures_test, strings_stop_at_their_nul_and_a_missing_page_is_reported_not_dropped) {
  auto r = regs();
  // An ASCII string that ends right before the page that is not present: read in full.
  const char end_of_page[] = "C:\\x";
  mem.write(0x20ffb, end_of_page, sizeof end_of_page);
  r.rdi = user_va + 0x1ffb;
  auto ok = one(spec("rdi", capture_spec::kind::ascii, 64), r);
  EXPECT_EQ(ok.fault, translation_fault::none);
  EXPECT_EQ(ok.text, "C:\\x");
  EXPECT_FALSE(ok.truncated);
  // The same string without its NUL runs into that page: the capture says where it failed.
  mem.write(0x20fff, "y", 1);
  auto failed = one(spec("rdi", capture_spec::kind::ascii, 64), r);
  EXPECT_EQ(failed.fault, translation_fault::not_present);
  EXPECT_EQ(failed.address, user_va + 0x2000);
  // Bounded: a long string gives its first `length` characters, flagged truncated.
  const char longer[] = "abcdefghij";
  mem.write(0x10300, longer, sizeof longer);
  r.rdi = user_va + 0x300;
  auto cut = one(spec("rdi", capture_spec::kind::ascii, 4), r);
  EXPECT_EQ(cut.text, "abcd");
  EXPECT_TRUE(cut.truncated);
  // UTF-16LE with a surrogate pair (U+1F600) and a lone surrogate, across a page boundary.
  const uint16_t wide[] = {'P', 0xd83d, 0xde00, 0xdc00, 'z', 0};
  mem.write(0x10ffa, wide, 6);
  mem.write(0x20000, reinterpret_cast<const char*>(wide) + 6, sizeof wide - 6);
  r.rdx = user_va + 0xffa;
  auto w = one(spec("rdx", capture_spec::kind::utf16, 64), r);
  EXPECT_EQ(w.fault, translation_fault::none);
  EXPECT_EQ(w.text, "P\xf0\x9f\x98\x80\xef\xbf\xbdz");
  // A pointer that is no address at all.
  r.rdx = 0x1234'5678'9abc'def0ULL;
  EXPECT_EQ(one(spec("rdx", capture_spec::kind::utf16, 64), r).fault,
            translation_fault::non_canonical);
  // A load on the way that fails stops the capture there.
  auto deref = one(spec("[rdx]"), r);
  EXPECT_EQ(deref.fault, translation_fault::non_canonical);
  EXPECT_EQ(deref.address, r.rdx);
}

}  // namespace
