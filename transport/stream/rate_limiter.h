// RateLimiter: one migration's bandwidth cap, shared by all its streams and adjustable while
// they run. Lock-free: every stream reserves its bytes on a shared virtual clock.
#ifndef MIGMOVER_TRANSPORT_STREAM_RATE_LIMITER_H_
#define MIGMOVER_TRANSPORT_STREAM_RATE_LIMITER_H_

#include <atomic>
#include <cstdint>

#include "absl/time/time.h"

namespace migmover::stream {

class RateLimiter {
 public:
  // `bytes_per_second` 0 = unlimited. `burst`: how far below the cap a stream that was idle may
  // catch up at once (keeps the average exact over a second without idling a fast stream).
  explicit RateLimiter(uint64_t bytes_per_second = 0,
                       absl::Duration burst = absl::Milliseconds(20));

  // Changes the cap from now on; safe while streams run.
  void SetRate(uint64_t bytes_per_second);
  uint64_t rate() const { return rate_.load(std::memory_order_relaxed); }

  // Reserves `bytes` and returns how long the caller must wait before sending them (zero when
  // unlimited or under the cap). Never blocks.
  absl::Duration Reserve(uint64_t bytes);

 private:
  std::atomic<uint64_t> rate_;
  const int64_t burst_ns_;
  // The virtual time (ns since the steady epoch) at which the cap allows the next byte.
  std::atomic<int64_t> next_ns_{0};
};

}  // namespace migmover::stream

#endif  // MIGMOVER_TRANSPORT_STREAM_RATE_LIMITER_H_
