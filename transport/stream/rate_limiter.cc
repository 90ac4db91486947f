#include "transport/stream/rate_limiter.h"

#include <time.h>

#include <algorithm>

#include "transport/stream/host_bandwidth.h"

namespace migmover::stream {

int64_t MonotonicNowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

int64_t ReserveOnClock(std::atomic<int64_t>& clock, uint64_t rate, int64_t burst_ns,
                       int64_t now_ns, uint64_t bytes) {
  const int64_t cost = static_cast<int64_t>(static_cast<double>(bytes) * 1e9 / rate);
  int64_t next = clock.load(std::memory_order_relaxed);
  int64_t start;
  do {
    start = std::max(next, now_ns - burst_ns);
  } while (!clock.compare_exchange_weak(next, start + cost, std::memory_order_relaxed));
  return start;
}

RateLimiter::RateLimiter(uint64_t bytes_per_second, absl::Duration burst)
    : rate_(bytes_per_second), burst_ns_(absl::ToInt64Nanoseconds(burst)) {}

RateLimiter::~RateLimiter() { LeaveHost(); }

void RateLimiter::LeaveHost() {
  if (host_ && !left_host_.exchange(true)) host_->Leave(this);
}

void RateLimiter::JoinHost(std::shared_ptr<HostBandwidth> host) {
  if (host == nullptr || host->rate() == 0) return;
  host_ = std::move(host);
  host_->Join(this);
}

void RateLimiter::SetRate(uint64_t bytes_per_second) {
  rate_.store(bytes_per_second, std::memory_order_relaxed);
  // Forget credit or debt accumulated under the old cap.
  next_ns_.store(MonotonicNowNs(), std::memory_order_relaxed);
  // The host's split depends on each migration's own cap: redo it now, not a period later.
  if (host_) host_->Rebalance();
}

namespace {
uint64_t Smaller(uint64_t own, uint64_t share) {
  if (own == 0) return share;
  if (share == 0) return own;
  return std::min(own, share);
}
}  // namespace

void RateLimiter::SetShare(uint64_t bytes_per_second, bool held_back) {
  held_back_.store(held_back, std::memory_order_relaxed);
  const uint64_t old_share = share_.exchange(bytes_per_second, std::memory_order_relaxed);
  const uint64_t before = Smaller(rate(), old_share);
  const uint64_t after = Smaller(rate(), bytes_per_second);
  if (before == after || before == 0) return;
  // Time ahead of now on this clock is bytes already reserved at the old rate: they take
  // before/after as long at the new one. (Credit behind now stays: it is bounded by the burst.)
  const int64_t now = MonotonicNowNs();
  int64_t next = next_ns_.load(std::memory_order_relaxed);
  while (next > now) {
    const int64_t scaled =
        after == 0 ? now
                   : now + static_cast<int64_t>(static_cast<double>(next - now) *
                                                static_cast<double>(before) /
                                                static_cast<double>(after));
    if (next_ns_.compare_exchange_weak(next, scaled, std::memory_order_relaxed)) break;
  }
}

uint64_t RateLimiter::effective_rate() const { return Smaller(rate(), share()); }

absl::Duration RateLimiter::Reserve(uint64_t bytes) {
  uint64_t rate = effective_rate();
  if (rate == 0 && host_ == nullptr) return absl::ZeroDuration();
  // Only the host's split reads the count: an uncapped stream pays no atomic per frame.
  if (host_) reserved_.fetch_add(bytes, std::memory_order_relaxed);
  const int64_t now = MonotonicNowNs();
  if (host_ && rate != 0 && held_back_.load(std::memory_order_relaxed)) {
    // Data again after a pause (or a slow spell) that shrank the share: at that share these
    // bytes would wait past the next split. Ask for an equal part now instead.
    const int64_t ahead = std::max<int64_t>(0, next_ns_.load(std::memory_order_relaxed) - now) +
                          static_cast<int64_t>(static_cast<double>(bytes) * 1e9 / rate);
    if (ahead > host_->period_ns()) {
      held_back_.store(false, std::memory_order_relaxed);
      host_->Wake(this);
      rate = effective_rate();
    }
  }
  int64_t start = now;
  if (rate != 0) start = ReserveOnClock(next_ns_, rate, burst_ns_, now, bytes);
  // Every byte also goes on the host's clock: shares are re-split only every period, and the
  // host's cap must hold in between too. Charged now, not when its own clock lets it go: a
  // virtual clock takes its reservations in time order (one dated in the future would make
  // every other session wait behind it); the sum may then pass the cap briefly by what streams
  // have scheduled ahead (about a frame each), never lastingly.
  if (host_) start = std::max(start, host_->Charge(now, bytes));
  return start > now ? absl::Nanoseconds(start - now) : absl::ZeroDuration();
}

}  // namespace migmover::stream
