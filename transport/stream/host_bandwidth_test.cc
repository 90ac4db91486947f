#include "transport/stream/host_bandwidth.h"

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "transport/stream/rate_limiter.h"

namespace migmover::stream {
namespace {

constexpr uint64_t kHost = 32'000'000;

TEST(FairSharesTest, EqualMembersSplitEqually) {
  std::vector<ShareDemand> in(32);
  for (uint64_t s : FairShares(kHost, in)) EXPECT_EQ(s, kHost / 32);
}

TEST(FairSharesTest, AMemberCappedBelowItsPartLeavesTheRestToTheOthers) {
  std::vector<ShareDemand> in(3);
  in[0].cap = 2'000'000;
  auto s = FairShares(kHost, in);
  EXPECT_EQ(s[0], 2'000'000u);
  EXPECT_EQ(s[1], 15'000'000u);
  EXPECT_EQ(s[2], 15'000'000u);
}

TEST(FairSharesTest, AMemberCappedAboveItsPartGetsAnEqualPart) {
  std::vector<ShareDemand> in(2);
  in[0].cap = 30'000'000;
  auto s = FairShares(kHost, in);
  EXPECT_EQ(s[0], kHost / 2);
  EXPECT_EQ(s[1], kHost / 2);
}

TEST(FairSharesTest, AMemberThatUsesLittleOfItsShareLeavesTheRestToTheOthers) {
  std::vector<ShareDemand> in(4);
  for (auto& m : in) {
    m.share = kHost / 4;
    m.used = kHost / 4;
  }
  in[3].used = 3'000'000;  // Its device or peer holds it back to less than half its share.
  auto s = FairShares(kHost, in);
  EXPECT_EQ(s[3], 6'000'000u);  // Twice what it used.
  EXPECT_NEAR(static_cast<double>(s[0]), (kHost - 6'000'000) / 3.0, 1);
  EXPECT_EQ(s[0], s[1]);
  EXPECT_EQ(s[1], s[2]);
}

TEST(FairSharesTest, AnIdleMemberKeepsAFloor) {
  std::vector<ShareDemand> in(4);
  for (auto& m : in) m = {0, kHost / 4, static_cast<double>(kHost / 4)};
  in[0].used = 0;  // Between PRE_COPY rounds.
  auto s = FairShares(kHost, in);
  EXPECT_EQ(s[0], kHost / 16);  // host / (4 n): it starts again at once when data comes.
  EXPECT_NEAR(static_cast<double>(s[1]), (kHost - kHost / 16) / 3.0, 1);
}

// A busy CPU or a frame that fell just past a period's end costs a member less than half its
// share: it keeps its part.
TEST(FairSharesTest, AMemberThatUsedMoreThanHalfItsShareKeepsItsPart) {
  std::vector<ShareDemand> in(2);
  in[0] = {0, kHost / 2, 0.6 * (kHost / 2)};
  in[1] = {0, kHost / 2, static_cast<double>(kHost / 2)};
  auto s = FairShares(kHost, in);
  EXPECT_EQ(s[0], kHost / 2);
  EXPECT_EQ(s[1], kHost / 2);
}

TEST(FairSharesTest, AMemberThatUsesItsWholeShareWantsMore) {
  std::vector<ShareDemand> in(2);
  in[0] = {0, kHost / 16, static_cast<double>(kHost / 16)};  // Held back before, now using it.
  in[1] = {0, kHost - kHost / 16, static_cast<double>(kHost - kHost / 16)};
  auto s = FairShares(kHost, in);
  EXPECT_EQ(s[0], kHost / 2);
  EXPECT_EQ(s[1], kHost / 2);
}

TEST(FairSharesTest, ANewMemberGetsAnEqualPartAtOnce) {
  std::vector<ShareDemand> in(2);
  in[0] = {0, kHost, static_cast<double>(kHost)};
  in[1] = {0, 0, 0};  // Just joined: nothing measured yet.
  auto s = FairShares(kHost, in);
  EXPECT_EQ(s[0], kHost / 2);
  EXPECT_EQ(s[1], kHost / 2);
}

TEST(FairSharesTest, WhenNobodyNeedsItAllTheRestIsSpreadForWhoeverSpeedsUp) {
  std::vector<ShareDemand> in(2);
  in[0] = {0, kHost / 2, 0};        // Idle between PRE_COPY rounds.
  in[1] = {1'000'000, kHost / 2, 1'000'000};  // Held by its own cap.
  auto s = FairShares(kHost, in);
  EXPECT_EQ(s[1], 1'000'000u);  // Never above its own cap.
  EXPECT_EQ(s[0], kHost - 1'000'000);
}

TEST(FairSharesTest, EveryShareIsPositive) {
  std::vector<ShareDemand> in(3);
  for (auto& m : in) m.cap = 1;
  for (uint64_t s : FairShares(10, in)) EXPECT_GE(s, 1u);
}

// Drives `limiter` from `threads` threads in `chunk`-sized reservations until `end`; adds what
// was granted to `total`.
void Drive(RateLimiter* limiter, uint64_t chunk, int threads, absl::Time end,
           std::atomic<uint64_t>* total, std::vector<std::thread>* out) {
  for (int t = 0; t < threads; ++t) {
    out->emplace_back([=] {
      while (absl::Now() < end) {
        const absl::Duration wait = limiter->Reserve(chunk);
        if (wait > absl::ZeroDuration()) absl::SleepFor(wait);
        if (absl::Now() >= end) break;
        *total += chunk;
      }
    });
  }
}

// A migration with four streams and small frames reserves far more often than one with a
// single stream and large frames; the host still gives each half, and the sum its cap.
TEST(HostBandwidthTest, MigrationsShareTheHostCapEquallyWhateverTheirStreams) {
  auto host = std::make_shared<HostBandwidth>(kHost);
  RateLimiter many(0), one(0);
  many.JoinHost(host);
  one.JoinHost(host);
  EXPECT_EQ(host->members(), 2u);
  std::atomic<uint64_t> got_many{0}, got_one{0};
  std::vector<std::thread> threads;
  const absl::Time start = absl::Now();
  const absl::Time end = start + absl::Milliseconds(1500);
  Drive(&many, 64 << 10, 4, end, &got_many, &threads);
  Drive(&one, 1 << 20, 1, end, &got_one, &threads);
  for (auto& t : threads) t.join();
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  const double sum = static_cast<double>(got_many + got_one) / seconds;
  EXPECT_LT(sum, 1.05 * kHost);
  EXPECT_GT(sum, 0.5 * kHost);  // An overloaded machine delivers less, never more.
  const double part = static_cast<double>(got_one) / static_cast<double>(got_many + got_one);
  EXPECT_GT(part, 0.35) << "many streams: " << got_many << " B, one stream: " << got_one << " B";
  EXPECT_LT(part, 0.65) << "many streams: " << got_many << " B, one stream: " << got_one << " B";
}

TEST(HostBandwidthTest, AMigrationsOwnCapStillHoldsAndLeavesTheRestToTheOther) {
  auto host = std::make_shared<HostBandwidth>(kHost);
  RateLimiter capped(4'000'000), free(0);
  capped.JoinHost(host);
  free.JoinHost(host);
  EXPECT_EQ(capped.share(), 4'000'000u);
  EXPECT_EQ(free.share(), kHost - 4'000'000);
  std::atomic<uint64_t> got_capped{0}, got_free{0};
  std::vector<std::thread> threads;
  const absl::Time start = absl::Now();
  const absl::Time end = start + absl::Seconds(1);
  Drive(&capped, 64 << 10, 1, end, &got_capped, &threads);
  Drive(&free, 64 << 10, 1, end, &got_free, &threads);
  for (auto& t : threads) t.join();
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  EXPECT_LT(static_cast<double>(got_capped) / seconds, 1.05 * 4'000'000);
  EXPECT_LT(static_cast<double>(got_capped + got_free) / seconds, 1.05 * kHost);
}

TEST(HostBandwidthTest, LeavingGivesTheShareBack) {
  auto host = std::make_shared<HostBandwidth>(kHost);
  RateLimiter a(0);
  a.JoinHost(host);
  {
    RateLimiter b(0);
    b.JoinHost(host);
    EXPECT_EQ(a.share(), kHost / 2);
  }
  EXPECT_EQ(host->members(), 1u);
  EXPECT_EQ(a.share(), kHost);
}

// A session that ended stays queryable with its limiter alive: it must not keep a share.
TEST(HostBandwidthTest, LeaveHostGivesTheShareBackWhileTheLimiterLives) {
  auto host = std::make_shared<HostBandwidth>(kHost);
  RateLimiter live(0), ended(0);
  live.JoinHost(host);
  ended.JoinHost(host);
  EXPECT_EQ(live.share(), kHost / 2);
  ended.LeaveHost();
  ended.LeaveHost();  // Idempotent.
  EXPECT_EQ(host->members(), 1u);
  EXPECT_EQ(live.share(), kHost);
}

// Debt run up at a small share is not waited out at it once the share grows.
TEST(HostBandwidthTest, AShareThatGrowsRescalesTheScheduleAhead) {
  RateLimiter rl(0, absl::ZeroDuration());
  rl.SetShare(1000);
  EXPECT_LE(rl.Reserve(1000), absl::Milliseconds(1));
  const absl::Duration before = rl.Reserve(1000);  // One second ahead at 1 kB/s.
  EXPECT_GT(before, absl::Milliseconds(900));
  rl.SetShare(100'000);  // 100x: what was a second ahead is now 10 ms.
  EXPECT_LT(rl.Reserve(1000), absl::Milliseconds(50));
}

// A member held back to a small share that has data again asks for an equal part at once,
// rather than sending a frame at the small share (seconds, for a large frame).
TEST(HostBandwidthTest, AHeldBackMemberWithDataAgainGetsAnEqualPartAtOnce) {
  auto host = std::make_shared<HostBandwidth>(kHost);
  RateLimiter paused(0), busy(0);
  paused.JoinHost(host);
  busy.JoinHost(host);
  paused.SetShare(kHost / 8, /*held_back=*/true);  // As a split after a pause leaves it.
  const absl::Duration wait = paused.Reserve(4 << 20);  // 1 s at its small share.
  EXPECT_EQ(paused.share(), kHost / 2);
  EXPECT_LT(wait, absl::Milliseconds(300)) << "scheduled at the small share";
}

TEST(HostBandwidthTest, NoHostCapLimitsNothing) {
  auto host = std::make_shared<HostBandwidth>(0);
  RateLimiter a(0);
  a.JoinHost(host);
  EXPECT_EQ(host->members(), 0u);
  EXPECT_EQ(a.Reserve(1ull << 30), absl::ZeroDuration());
}

}  // namespace
}  // namespace migmover::stream
