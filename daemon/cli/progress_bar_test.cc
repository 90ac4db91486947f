#include "daemon/cli/progress_bar.h"

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace migmover::ctl {
namespace {

using v1::SessionStatus;

SessionStatus Source(uint64_t moved, uint64_t pending, uint64_t stop_copy) {
  SessionStatus s;
  s.set_role(SessionStatus::SOURCE);
  s.set_phase(SessionStatus::PRE_COPY);
  s.set_bytes_moved(moved);
  s.set_rate_bytes_per_second(250e6);
  s.set_expected_downtime_seconds(0.12);
  s.set_downtime_limit_seconds(0.3);
  s.set_precopy_rounds(2);
  auto* d = s.add_devices();
  d->set_pending_bytes(pending);
  d->set_stop_copy_size_bytes(stop_copy);
  d->set_stop_copy_size_known(true);
  return s;
}

TEST(ProgressLineTest, ShowsTheBarAndEveryFieldOnAWideTerminal) {
  SessionStatus s = Source(750'000'000, 100'000'000, 250'000'000);
  s.set_switchover_ready(true);
  const std::string line = ProgressLine(s, 160);
  EXPECT_TRUE(absl::StartsWith(line, "[")) << line;
  EXPECT_NE(line.find(" 75% "), std::string::npos) << line;  // 750 of 750 + max(100, 250).
  EXPECT_NE(line.find("PRE_COPY, READY"), std::string::npos) << line;
  EXPECT_NE(line.find("750.00 MB moved"), std::string::npos) << line;
  EXPECT_NE(line.find("250.00 MB/s"), std::string::npos) << line;
  EXPECT_NE(line.find("250.00 MB left"), std::string::npos) << line;
  EXPECT_NE(line.find("downtime ~0.120 s (limit 0.300 s)"), std::string::npos) << line;
  EXPECT_NE(line.find("round 2"), std::string::npos) << line;
  EXPECT_LE(line.size(), 160u);
}

TEST(ProgressLineTest, NeverPassesTheWidthAndHasNoControlCharacters) {
  const SessionStatus s = Source(1, 2, 3);
  for (int width : {0, 5, 20, 40, 79, 200}) {
    const std::string line = ProgressLine(s, width);
    EXPECT_LE(static_cast<int>(line.size()), width);
    for (char c : line) EXPECT_GE(static_cast<unsigned char>(c), 0x20) << width;
  }
}

TEST(ProgressLineTest, WildSizesFromADriverNeitherWrapNorOverflowTheBar) {
  SessionStatus s = Source(UINT64_MAX - 5, UINT64_MAX, UINT64_MAX);
  auto* d = s.add_devices();
  d->set_pending_bytes(UINT64_MAX);
  const std::string line = ProgressLine(s, 120);
  EXPECT_LE(line.size(), 120u);
  EXPECT_TRUE(absl::StartsWith(line, "[")) << line;
}

TEST(ProgressLineTest, SaysNotReadyUntilTheSourceIsReady) {
  EXPECT_NE(ProgressLine(Source(1, 2, 3), 120).find("not ready"), std::string::npos);
}

TEST(ProgressLineTest, ADestinationGetsNoBarForItDoesNotKnowWhatRemains) {
  SessionStatus s;
  s.set_role(SessionStatus::DESTINATION);
  s.set_phase(SessionStatus::STOP_COPY);
  s.set_bytes_moved(5'000'000);
  const std::string line = ProgressLine(s, 120);
  EXPECT_TRUE(absl::StartsWith(line, "STOP_COPY, 5.00 MB moved")) << line;
  EXPECT_EQ(line.find('['), std::string::npos) << line;
}

TEST(ProgressLineTest, ASucceededSourceIsFull) {
  SessionStatus s = Source(10, 0, 0);
  s.set_phase(SessionStatus::SUCCEEDED);
  EXPECT_NE(ProgressLine(s, 120).find("100%"), std::string::npos) << ProgressLine(s, 120);
}

}  // namespace
}  // namespace migmover::ctl
