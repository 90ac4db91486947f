// RateLimiter: one migration's bandwidth cap, shared by all its streams and adjustable while
// they run. Lock-free: every stream reserves its bytes on a shared virtual clock.
//
// A limiter may belong to a HostBandwidth (host_bandwidth.h), the daemon-wide budget: it then
// also stays within the share the host gives it (SetShare), and charges every byte to the host's
// own clock, so the sum of all migrations holds the host's cap even while shares move.
#ifndef MIGMOVER_TRANSPORT_STREAM_RATE_LIMITER_H_
#define MIGMOVER_TRANSPORT_STREAM_RATE_LIMITER_H_

#include <atomic>
#include <cstdint>
#include <memory>

#include "absl/time/time.h"

namespace migmover::stream {

class HostBandwidth;

class RateLimiter {
 public:
  // `bytes_per_second` 0 = unlimited. `burst`: how far below the cap a stream that was idle may
  // catch up at once (keeps the average exact over a second without idling a fast stream).
  explicit RateLimiter(uint64_t bytes_per_second = 0,
                       absl::Duration burst = absl::Milliseconds(20));
  // Leaves the host's budget, if it joined one.
  ~RateLimiter();
  RateLimiter(const RateLimiter&) = delete;
  RateLimiter& operator=(const RateLimiter&) = delete;

  // Joins `host`'s budget (null: none) until LeaveHost or destruction. Call once, before any
  // stream uses it.
  void JoinHost(std::shared_ptr<HostBandwidth> host);
  // Gives the share back: the migration ended (its limiter may live on in a session kept for
  // queries, and must not hold part of the host's cap). Idempotent; reservations after it
  // still count on the host's clock.
  void LeaveHost();

  // Changes this migration's own cap from now on; safe while streams run.
  void SetRate(uint64_t bytes_per_second);
  // This migration's own cap (0 = none), as set by the constructor or SetRate.
  uint64_t rate() const { return rate_.load(std::memory_order_relaxed); }
  // The host's share for this migration (0 = no host cap), and whether the split found it held
  // back by something else (it used less than half its share); set by HostBandwidth only. A
  // schedule already ahead of now is rescaled to the new rate: debt run up at a small share
  // is not waited out at it once the share grows.
  void SetShare(uint64_t bytes_per_second, bool held_back = false);
  uint64_t share() const { return share_.load(std::memory_order_relaxed); }
  // What the streams get now: the smaller of the own cap and the share (0 = unlimited).
  uint64_t effective_rate() const;
  // Bytes reserved so far while in a host's budget (the host measures each migration's demand
  // by it; without a host nothing counts them).
  uint64_t reserved_bytes() const { return reserved_.load(std::memory_order_relaxed); }

  // Reserves `bytes` and returns how long the caller must wait before sending them (zero when
  // unlimited or under the cap). Never waits on a peer; lock-free except when a held-back
  // member of a host budget has data again (it takes the host's lock once, to be re-split).
  absl::Duration Reserve(uint64_t bytes);

 private:
  std::atomic<uint64_t> rate_;
  std::atomic<uint64_t> share_{0};
  std::atomic<bool> held_back_{false};
  std::atomic<bool> left_host_{false};
  std::atomic<uint64_t> reserved_{0};
  const int64_t burst_ns_;
  // The virtual time (ns since the steady epoch) at which the cap allows the next byte.
  std::atomic<int64_t> next_ns_{0};
  std::shared_ptr<HostBandwidth> host_;  // Set once by JoinHost, before streams run.
};

// The virtual-clock schedule both levels use: reserves `bytes` at `rate` on `clock` (burst credit
// `burst_ns`) and returns the time (ns, CLOCK_MONOTONIC) at which they may go. `rate` > 0.
int64_t ReserveOnClock(std::atomic<int64_t>& clock, uint64_t rate, int64_t burst_ns,
                       int64_t now_ns, uint64_t bytes);
// CLOCK_MONOTONIC in nanoseconds.
int64_t MonotonicNowNs();

}  // namespace migmover::stream

#endif  // MIGMOVER_TRANSPORT_STREAM_RATE_LIMITER_H_
