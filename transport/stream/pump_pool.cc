#include "transport/stream/pump_pool.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace migmover::stream {

absl::StatusOr<std::unique_ptr<PumpPool>> PumpPool::Create(uint32_t workers,
                                                           io::IoEngine engine) {
  if (workers == 0 || workers > 64) {
    return absl::InvalidArgumentError(absl::StrCat("pump workers ", workers, " outside 1..64"));
  }
  std::unique_ptr<PumpPool> pool(new PumpPool());
  for (uint32_t i = 0; i < workers; ++i) {
    absl::StatusOr<std::unique_ptr<PumpWorker>> w = PumpWorker::Start(engine);
    if (!w.ok()) return w.status();
    pool->workers_.push_back(std::move(*w));
  }
  absl::MutexLock l(&pool->mu_);
  pool->leased_.assign(workers, 0);
  return pool;
}

std::vector<PumpPool::Lease> PumpPool::Acquire(uint32_t n) {
  std::vector<uint32_t> order(workers_.size());
  std::iota(order.begin(), order.end(), 0u);
  std::vector<Lease> out;
  absl::MutexLock l(&mu_);
  // A worker that could not replace a broken queue takes no jobs: it goes last, and is leased
  // only if no other is left (its streams then fail with its error instead of hanging).
  std::vector<uint64_t> load(leased_.begin(), leased_.end());
  for (size_t i = 0; i < load.size(); ++i) {
    if (workers_[i]->failed()) load[i] += uint64_t{1} << 32;
  }
  std::stable_sort(order.begin(), order.end(),
                   [&](uint32_t a, uint32_t b) { return load[a] < load[b]; });
  order.resize(std::min<size_t>(n, order.size()));
  for (uint32_t i : order) {
    ++leased_[i];
    out.push_back(Lease(this, i));
  }
  return out;
}

uint32_t PumpPool::leased(uint32_t i) {
  absl::MutexLock l(&mu_);
  return i < leased_.size() ? leased_[i] : 0;
}

void PumpPool::Release(uint32_t index) {
  absl::MutexLock l(&mu_);
  --leased_[index];
}

PumpPool::Lease& PumpPool::Lease::operator=(Lease&& o) noexcept {
  if (this != &o) {
    Reset();
    pool_ = o.pool_;
    index_ = o.index_;
    o.pool_ = nullptr;
  }
  return *this;
}

void PumpPool::Lease::Reset() {
  if (pool_ != nullptr) pool_->Release(index_);
  pool_ = nullptr;
}

PumpWorker* PumpPool::Lease::worker() const {
  return pool_ != nullptr ? pool_->workers_[index_].get() : nullptr;
}

}  // namespace migmover::stream
