#include "transport/stream/rate_limiter.h"

#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace migmover::stream {
namespace {

// Sends `chunk`-sized pieces as fast as the limiter allows for `window`; returns bytes per
// second actually granted.
double Drive(RateLimiter& rl, uint64_t chunk, absl::Duration window, int threads = 1) {
  std::atomic<uint64_t> total{0};
  const absl::Time end = absl::Now() + window;
  std::vector<std::thread> ts;
  const absl::Time start = absl::Now();
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&] {
      while (absl::Now() < end) {
        absl::Duration wait = rl.Reserve(chunk);
        if (wait > absl::ZeroDuration()) absl::SleepFor(wait);
        if (absl::Now() >= end) break;
        total += chunk;
      }
    });
  }
  for (auto& t : ts) t.join();
  return static_cast<double>(total) / absl::ToDoubleSeconds(absl::Now() - start);
}

TEST(RateLimiterTest, UnlimitedNeverWaits) {
  RateLimiter rl(0);
  EXPECT_EQ(rl.Reserve(1 << 30), absl::ZeroDuration());
}

// The schedule itself, without relying on the machine's timing: back-to-back reservations of a
// second's worth of bytes are spread over exactly one second (less the burst allowance).
TEST(RateLimiterTest, ScheduleSpreadsASecondOfBytesOverASecond) {
  const uint64_t rate = 100u << 20;
  RateLimiter rl(rate, absl::Milliseconds(20));
  absl::Duration last;
  const absl::Time start = absl::Now();
  for (int i = 0; i < 100; ++i) last = rl.Reserve(rate / 100);
  // Each wait counts from its own call: a loop slowed by a loaded machine waits that much less.
  const absl::Duration spent = absl::Now() - start;
  // The 100th reservation starts after 99 hundredths of a second, minus the burst credit.
  EXPECT_GT(last + spent, absl::Milliseconds(990 - 20 - 5));
  EXPECT_LT(last, absl::Milliseconds(990 + 5));
}

// Real streams never exceed the cap (an overloaded machine may deliver less, never more).
TEST(RateLimiterTest, StreamsStayUnderTheCap) {
  RateLimiter rl(200u << 20);  // 200 MiB/s in 1 MiB chunks from two streams.
  double got = Drive(rl, 1 << 20, absl::Seconds(1), 2);
  EXPECT_LT(got, 1.1 * (200u << 20));
  EXPECT_GT(got, 0.3 * (200u << 20));
}

TEST(RateLimiterTest, RateChangesWhileRunning) {
  RateLimiter rl(100u << 20);
  Drive(rl, 256 << 10, absl::Milliseconds(300));
  rl.SetRate(20u << 20);
  double got = Drive(rl, 256 << 10, absl::Seconds(1));
  EXPECT_LT(got, 1.1 * (20u << 20));
  EXPECT_GT(got, 0.3 * (20u << 20));
  rl.SetRate(0);
  EXPECT_EQ(rl.Reserve(1 << 30), absl::ZeroDuration());
}

TEST(RateLimiterTest, ReservationsQueueUp) {
  RateLimiter rl(1000, absl::ZeroDuration());  // 1 kB/s, no burst.
  EXPECT_LE(rl.Reserve(500), absl::Milliseconds(1));
  absl::Duration second = rl.Reserve(500);
  EXPECT_GT(second, absl::Milliseconds(400));
  EXPECT_LT(second, absl::Milliseconds(600));
}

}  // namespace
}  // namespace migmover::stream
