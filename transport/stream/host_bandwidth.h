// HostBandwidth: the daemon's host-wide bandwidth cap (`--max_bandwidth`), shared fairly by the
// migrations that send at once. Each source session's RateLimiter joins it (RateLimiter::
// JoinHost) and leaves when destroyed.
//
// Two mechanisms, because each alone fails one way:
// - Every byte any migration sends is charged to the host's own virtual clock, so the sum never
//   exceeds the cap (within one burst), whatever the shares say at the moment.
// - Shares, recomputed every `period` (and at once when a migration joins, leaves or changes its
//   own cap): max-min fair over what each migration can use. A migration capped below an equal
//   split keeps its cap and the rest is split among the others; one that used less than half of
//   its share lately (its device, disk or peer is the bottleneck, or it waits between PRE_COPY
//   rounds) is given twice what it used, so a slow or stalled session
//   does not hold bandwidth the others could use. A migration that uses its whole share is
//   given an equal split again at the next period.
// Without the shares the host clock alone would serve whoever reserves most often: a session
// with more streams, or smaller frames, would take more than its part.
//
// Threads: a rebalancer thread of its own (started only with a cap). mu_ guards the members and
// their measurements; the streams' hot path (Charge) takes no lock.
#ifndef MIGMOVER_TRANSPORT_STREAM_HOST_BANDWIDTH_H_
#define MIGMOVER_TRANSPORT_STREAM_HOST_BANDWIDTH_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace migmover::stream {

class RateLimiter;

// One migration's input to the split.
struct ShareDemand {
  uint64_t cap = 0;      // Its own cap (0 = none).
  uint64_t share = 0;    // Its share until now (0 = it just joined).
  // Bytes per second it reserved: the larger of the last period's and the average over the
  // last few, so one slow period (a frame that fell just after its end, a busy CPU) does not
  // cost it its share, and a fast one shows at once.
  double used = 0;
};

// Whether `m` used less than half its share: something else holds it back, and the split
// gives it twice what it used (at least a floor) instead of an equal part.
bool HeldBack(const ShareDemand& m);

// The max-min fair split of `host_rate` over `members` (see the class comment); one share per
// member, each at least 1. Pure: the policy, tested on its own.
std::vector<uint64_t> FairShares(uint64_t host_rate, const std::vector<ShareDemand>& members);

class HostBandwidth {
 public:
  // `bytes_per_second` 0: no host cap (members are never limited by it; no thread runs).
  explicit HostBandwidth(uint64_t bytes_per_second,
                         absl::Duration period = absl::Milliseconds(100),
                         absl::Duration burst = absl::Milliseconds(20));
  // Every member must have left.
  ~HostBandwidth();
  HostBandwidth(const HostBandwidth&) = delete;
  HostBandwidth& operator=(const HostBandwidth&) = delete;

  uint64_t rate() const { return rate_; }
  // Migrations sharing the cap now.
  size_t members();

  // For RateLimiter. Join/Leave re-split at once; Leave returns only once no rebalance uses
  // `limiter` any more (and is a no-op for one that is not a member).
  void Join(RateLimiter* limiter);
  void Leave(RateLimiter* limiter);
  void Rebalance();
  // A member that was held back (RateLimiter::held_back) has data again: it counts as wanting
  // an equal part, re-split now, rather than waiting out a schedule made at its small share
  // until the next period.
  void Wake(RateLimiter* limiter);
  int64_t period_ns() const { return absl::ToInt64Nanoseconds(period_); }
  // Charges `bytes` reserved at `now_ns` to the host's clock; returns when they may go.
  // Lock-free.
  int64_t Charge(int64_t now_ns, uint64_t bytes);

 private:
  struct Member {
    uint64_t reserved_at_last = 0;  // RateLimiter::reserved_bytes() when last measured...
    int64_t since_ns = 0;           // ...at this time (a periodic split, or the join).
    double average = -1;            // Bytes per second, smoothed over periods (-1: none yet).
    // What the last periodic split took as its use (-1: unknown, e.g. just joined or woken:
    // it counts as using its whole share). Splits in between reuse it.
    double used = -1;
  };
  void RebalanceLocked(bool measure) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Loop();

  const uint64_t rate_;
  const absl::Duration period_;
  const int64_t burst_ns_;
  std::atomic<int64_t> next_ns_{0};  // The host's virtual clock.

  absl::Mutex mu_;
  std::map<RateLimiter*, Member> members_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;  // Last: started once the fields above are.
};

}  // namespace migmover::stream

#endif  // MIGMOVER_TRANSPORT_STREAM_HOST_BANDWIDTH_H_
