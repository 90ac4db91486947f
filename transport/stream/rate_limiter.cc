#include "transport/stream/rate_limiter.h"

#include <time.h>

#include <algorithm>

namespace migmover::stream {
namespace {
int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}
}  // namespace

RateLimiter::RateLimiter(uint64_t bytes_per_second, absl::Duration burst)
    : rate_(bytes_per_second), burst_ns_(absl::ToInt64Nanoseconds(burst)) {}

void RateLimiter::SetRate(uint64_t bytes_per_second) {
  rate_.store(bytes_per_second, std::memory_order_relaxed);
  // Forget credit or debt accumulated under the old cap.
  next_ns_.store(NowNs(), std::memory_order_relaxed);
}

absl::Duration RateLimiter::Reserve(uint64_t bytes) {
  const uint64_t rate = rate_.load(std::memory_order_relaxed);
  if (rate == 0) return absl::ZeroDuration();
  const int64_t now = NowNs();
  const int64_t cost = static_cast<int64_t>(static_cast<double>(bytes) * 1e9 / rate);
  int64_t next = next_ns_.load(std::memory_order_relaxed);
  int64_t start;
  do {
    start = std::max(next, now - burst_ns_);
  } while (!next_ns_.compare_exchange_weak(next, start + cost, std::memory_order_relaxed));
  return start > now ? absl::Nanoseconds(start - now) : absl::ZeroDuration();
}

}  // namespace migmover::stream
