// PumpPool: the daemon's pump workers (pump_worker.h), one per core by default, shared by every
// session of the host. Sharing them is what keeps many small concurrent migrations as cheap per
// byte as one large one: 32 sessions with a worker each ran 32 data threads on 2 cores, and
// their mover CPU per GB was 1.2-1.4x that of the same devices in one session on 2 workers
// (bench/README.md, "Many sessions").
//
// A session leases the workers its devices' streams run on (one lease per worker it uses, however
// many of its devices share it); a lease goes to the worker with the fewest leases at that
// moment, so sessions that start together spread over the cores.
//
// Thread-safe. The pool must outlive its leases.
#ifndef MIGMOVER_TRANSPORT_STREAM_PUMP_POOL_H_
#define MIGMOVER_TRANSPORT_STREAM_PUMP_POOL_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "transport/io/io_engine.h"
#include "transport/stream/pump_worker.h"

namespace migmover::stream {

class PumpPool {
 public:
  // Starts `workers` (1..64) workers on queues of `engine`. Errors: InvalidArgument for a
  // count out of range; a worker's start (the queue refused).
  static absl::StatusOr<std::unique_ptr<PumpPool>> Create(uint32_t workers, io::IoEngine engine);

  // One worker held for a stream (or a session's group of streams); move-only, given back
  // when destroyed.
  class Lease {
   public:
    Lease() = default;
    Lease(Lease&& o) noexcept : pool_(o.pool_), index_(o.index_) { o.pool_ = nullptr; }
    Lease& operator=(Lease&& o) noexcept;
    ~Lease() { Reset(); }
    void Reset();
    PumpWorker* worker() const;  // Null for an empty lease.

   private:
    friend class PumpPool;
    Lease(PumpPool* pool, uint32_t index) : pool_(pool), index_(index) {}
    PumpPool* pool_ = nullptr;
    uint32_t index_ = 0;
  };

  // min(n, size()) leases on distinct workers, the least loaded first (ties: the lowest index).
  std::vector<Lease> Acquire(uint32_t n);

  uint32_t size() const { return static_cast<uint32_t>(workers_.size()); }
  // Leases held on worker `i` now (for tests and status).
  uint32_t leased(uint32_t i);

 private:
  PumpPool() = default;
  void Release(uint32_t index);

  std::vector<std::unique_ptr<PumpWorker>> workers_;  // Immutable after Create.
  absl::Mutex mu_;
  std::vector<uint32_t> leased_ ABSL_GUARDED_BY(mu_);  // By worker.
};

}  // namespace migmover::stream

#endif  // MIGMOVER_TRANSPORT_STREAM_PUMP_POOL_H_
