// A recurring cause is logged at most once per interval, and the next line says how many
// were left out.

#include "actors/model/log_limit.hpp"

#include <gtest/gtest.h>

using namespace vmitap;
using namespace std::chrono_literals;

TEST(log_limit, one_line_per_interval_and_the_next_counts_what_it_left_out) {
  log_limit limit{10s};
  log_limit::clock::time_point t{};
  t += 1h;
  ASSERT_TRUE(limit.allow(t));
  EXPECT_EQ(limit.note(), "");
  int allowed = 0;
  for (int i = 1; i <= 3000; ++i)  // a cause that comes and goes, 3000 times in 9 s
    allowed += limit.allow(t + i * 3ms);
  EXPECT_EQ(allowed, 0);
  ASSERT_TRUE(limit.allow(t + 10s));
  EXPECT_EQ(limit.note(), " (3000 more like it since the last report)");
  ASSERT_TRUE(limit.allow(t + 25s));
  EXPECT_EQ(limit.note(), "") << "none was left out in between";
}
