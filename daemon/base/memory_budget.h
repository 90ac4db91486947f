// MemoryBudget: how much memory the daemon's devices and sessions may hold at once
// (`--max_memory`). What a device or session will need is reserved before it is created, and an
// admission that would pass the budget is refused with RESOURCE_EXHAUSTED, so many agents at once
// cannot make the daemon allocate without bound (and be OOM-killed with every migration in it).
// The charges are estimates of what each allocates up front (see the callers); the budget is an
// admission rule, not an allocator. Thread-safe; the mutex guards only the counter.
#ifndef MIGMOVER_DAEMON_BASE_MEMORY_BUDGET_H_
#define MIGMOVER_DAEMON_BASE_MEMORY_BUDGET_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace migmover {

class MemoryBudget : public std::enable_shared_from_this<MemoryBudget> {
 public:
  // Move-only; gives its bytes back when destroyed or reset. A default one holds nothing.
  class Reservation {
   public:
    Reservation() = default;
    Reservation(Reservation&& o) noexcept : budget_(o.budget_), bytes_(o.bytes_) {
      o.budget_ = nullptr;
      o.bytes_ = 0;
    }
    Reservation& operator=(Reservation&& o) noexcept;
    Reservation(const Reservation&) = delete;
    Reservation& operator=(const Reservation&) = delete;
    ~Reservation() { Reset(); }
    void Reset();
    uint64_t bytes() const { return bytes_; }

   private:
    friend class MemoryBudget;
    Reservation(std::shared_ptr<MemoryBudget> budget, uint64_t bytes)
        : budget_(std::move(budget)), bytes_(bytes) {}
    std::shared_ptr<MemoryBudget> budget_;
    uint64_t bytes_ = 0;
  };

  // `limit` bytes at most (0: no limit; reservations are still counted).
  static std::shared_ptr<MemoryBudget> Create(uint64_t limit);

  // Reserves `bytes` for `what` (named in the error). ResourceExhausted when in_use() + bytes
  // would pass the limit; nothing is reserved then.
  absl::StatusOr<Reservation> Reserve(uint64_t bytes, const std::string& what);

  uint64_t limit() const { return limit_; }
  uint64_t in_use();

  // The default limit: a quarter of the machine's memory (MemTotal), at least 256 MiB.
  static uint64_t DefaultLimit();

 private:
  explicit MemoryBudget(uint64_t limit) : limit_(limit) {}
  void Release(uint64_t bytes);

  const uint64_t limit_;
  absl::Mutex mu_;
  uint64_t in_use_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace migmover

#endif  // MIGMOVER_DAEMON_BASE_MEMORY_BUDGET_H_
