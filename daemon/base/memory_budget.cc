#include "daemon/base/memory_budget.h"

#include <unistd.h>

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace migmover {

MemoryBudget::Reservation& MemoryBudget::Reservation::operator=(Reservation&& o) noexcept {
  if (this != &o) {
    Reset();
    budget_ = std::move(o.budget_);
    bytes_ = o.bytes_;
    o.budget_ = nullptr;
    o.bytes_ = 0;
  }
  return *this;
}

void MemoryBudget::Reservation::Reset() {
  if (budget_ != nullptr) budget_->Release(bytes_);
  budget_ = nullptr;
  bytes_ = 0;
}

std::shared_ptr<MemoryBudget> MemoryBudget::Create(uint64_t limit) {
  return std::shared_ptr<MemoryBudget>(new MemoryBudget(limit));
}

absl::StatusOr<MemoryBudget::Reservation> MemoryBudget::Reserve(uint64_t bytes,
                                                                const std::string& what) {
  absl::MutexLock l(&mu_);
  if (limit_ != 0 && (bytes > limit_ || in_use_ > limit_ - bytes)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        what, " needs ", bytes, " bytes of memory; ", in_use_, " of this daemon's ", limit_,
        " (--max_memory) are in use", bytes > limit_ ? ": it can never fit" : ": retry once a "
                                                                          "session ends"));
  }
  in_use_ += bytes;
  return Reservation(shared_from_this(), bytes);
}

uint64_t MemoryBudget::in_use() {
  absl::MutexLock l(&mu_);
  return in_use_;
}

void MemoryBudget::Release(uint64_t bytes) {
  absl::MutexLock l(&mu_);
  in_use_ -= std::min(in_use_, bytes);
}

uint64_t MemoryBudget::DefaultLimit() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page = sysconf(_SC_PAGE_SIZE);
  const uint64_t total = pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * page : 0;
  return std::max<uint64_t>(total / 4, 256ull << 20);
}

}  // namespace migmover
