#include "transport/stream/host_bandwidth.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "transport/stream/rate_limiter.h"

namespace migmover::stream {

bool HeldBack(const ShareDemand& m) {
  return m.share != 0 && m.used < 0.5 * static_cast<double>(m.share);
}

std::vector<uint64_t> FairShares(uint64_t host_rate, const std::vector<ShareDemand>& members) {
  const size_t n = members.size();
  std::vector<uint64_t> shares(n, 0);
  if (n == 0) return shares;
  const double host = static_cast<double>(host_rate);
  constexpr double kUnbounded = std::numeric_limits<double>::infinity();
  // What each can use. A member that left half its share unused is held by something else
  // (its device, its peer, a pause between PRE_COPY rounds): it gets twice what it used (at
  // least a small floor, so one that paused starts again at once), and is back to an equal
  // split as soon as it uses more than half of what it gets. Half, not nearly all: frames are
  // coarse against a period, and a session that a busy CPU delayed for one period must not
  // lose its part for it.
  const double floor = host / static_cast<double>(4 * n);
  std::vector<double> demand(n);
  for (size_t i = 0; i < n; ++i) {
    const ShareDemand& m = members[i];
    double d = m.cap != 0 ? static_cast<double>(m.cap) : kUnbounded;
    if (HeldBack(m)) {
      d = std::min(d, std::max(2 * m.used, floor));
    }
    demand[i] = d;
  }
  // Water-filling: whoever needs less than an equal split of what is left gets what it needs;
  // the rest split the remainder equally.
  std::vector<double> got(n, -1);
  double remaining = host;
  size_t open = n;
  for (bool settled = true; settled && open > 0;) {
    settled = false;
    const double fair = remaining / static_cast<double>(open);
    for (size_t i = 0; i < n; ++i) {
      if (got[i] < 0 && demand[i] <= fair) {
        got[i] = demand[i];
        remaining -= demand[i];
        --open;
        settled = true;
      }
    }
  }
  if (open > 0) {
    const double fair = remaining / static_cast<double>(open);
    for (size_t i = 0; i < n; ++i) {
      if (got[i] < 0) got[i] = fair;
    }
  } else if (remaining > 0) {
    // Everyone has what it can use: spread the rest, so whoever speeds up finds room at once
    // (the host's clock still holds the sum).
    // Never past a member's own cap: what it cannot take goes round again to the others.
    auto cap_of = [&](size_t i) {
      return members[i].cap != 0 ? static_cast<double>(members[i].cap) : kUnbounded;
    };
    while (remaining >= 1) {
      size_t room = 0;
      for (size_t i = 0; i < n; ++i) room += got[i] < cap_of(i) ? 1 : 0;
      if (room == 0) break;
      const double extra = remaining / static_cast<double>(room);
      for (size_t i = 0; i < n; ++i) {
        const double add = std::min(extra, cap_of(i) - got[i]);
        if (add > 0) {
          got[i] += add;
          remaining -= add;
        }
      }
    }
  }
  for (size_t i = 0; i < n; ++i) {
    shares[i] = std::max<uint64_t>(1, static_cast<uint64_t>(std::llround(got[i])));
  }
  return shares;
}

HostBandwidth::HostBandwidth(uint64_t bytes_per_second, absl::Duration period,
                             absl::Duration burst)
    : rate_(bytes_per_second), period_(period), burst_ns_(absl::ToInt64Nanoseconds(burst)) {
  if (rate_ != 0) thread_ = std::thread([this] { Loop(); });
}

HostBandwidth::~HostBandwidth() {
  {
    absl::MutexLock l(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

size_t HostBandwidth::members() {
  absl::MutexLock l(&mu_);
  return members_.size();
}

void HostBandwidth::Join(RateLimiter* limiter) {
  absl::MutexLock l(&mu_);
  members_[limiter] = Member{limiter->reserved_bytes(), MonotonicNowNs()};
  RebalanceLocked(/*measure=*/false);
}

void HostBandwidth::Leave(RateLimiter* limiter) {
  absl::MutexLock l(&mu_);
  members_.erase(limiter);
  RebalanceLocked(/*measure=*/false);
}

void HostBandwidth::Rebalance() {
  absl::MutexLock l(&mu_);
  RebalanceLocked(/*measure=*/false);
}

void HostBandwidth::Wake(RateLimiter* limiter) {
  absl::MutexLock l(&mu_);
  auto it = members_.find(limiter);
  if (it == members_.end()) return;
  it->second.used = -1;
  RebalanceLocked(/*measure=*/false);
}

int64_t HostBandwidth::Charge(int64_t now_ns, uint64_t bytes) {
  return ReserveOnClock(next_ns_, rate_, burst_ns_, now_ns, bytes);
}

void HostBandwidth::RebalanceLocked(bool measure) {
  if (rate_ == 0 || members_.empty()) return;
  const int64_t now = MonotonicNowNs();
  // Usage is measured by the periodic split only, each member since it was last measured (or
  // joined); a re-split in between (a join, a leave, a wake) reuses the last measurement.
  std::vector<ShareDemand> in;
  in.reserve(members_.size());
  for (auto& [limiter, m] : members_) {
    ShareDemand d;
    d.cap = limiter->rate();
    d.share = limiter->share();
    const uint64_t reserved = limiter->reserved_bytes();
    // Less than half a period (a member that just joined) says too little to go by.
    const int64_t window_ns = now - m.since_ns;
    const bool measured = measure && window_ns * 2 >= absl::ToInt64Nanoseconds(period_);
    if (measured) {
      const double last = static_cast<double>(reserved - m.reserved_at_last) * 1e9 /
                          static_cast<double>(window_ns);
      // About four periods of memory.
      const double average = m.average < 0 ? last : m.average + 0.25 * (last - m.average);
      m = Member{reserved, now, average, std::max(last, average)};
    }
    d.used = m.used >= 0 ? m.used : static_cast<double>(d.share);
    in.push_back(d);
  }
  const std::vector<uint64_t> shares = FairShares(rate_, in);
  size_t i = 0;
  for (auto& [limiter, m] : members_) {
    limiter->SetShare(shares[i], HeldBack(in[i]));
    ++i;
  }
}

void HostBandwidth::Loop() {
  absl::MutexLock l(&mu_);
  while (!stopping_) {
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), period_);
    if (!stopping_) RebalanceLocked(/*measure=*/true);
  }
}

}  // namespace migmover::stream
