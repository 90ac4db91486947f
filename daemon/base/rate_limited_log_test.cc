#include "daemon/base/rate_limited_log.h"

#include "gtest/gtest.h"

namespace migmover {
namespace {

TEST(RateLimitedLog, OneLinePerIntervalCountingWhatItHeldBack) {
  RateLimitedLog log("fd intake: connection refused: ", absl::Seconds(1));
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  EXPECT_EQ(log.Line("uid 1000", t0), "fd intake: connection refused: uid 1000");
  EXPECT_EQ(log.Line("uid 1001", t0 + absl::Milliseconds(10)), std::nullopt);
  EXPECT_EQ(log.Line("uid 1002", t0 + absl::Milliseconds(999)), std::nullopt);
  EXPECT_EQ(log.Line("uid 1003", t0 + absl::Seconds(1)),
            "fd intake: connection refused: uid 1003 (and 2 more not logged)");
  EXPECT_EQ(log.Line("uid 1004", t0 + absl::Seconds(3)),
            "fd intake: connection refused: uid 1004");
}

}  // namespace
}  // namespace migmover
