// PumpWorker: one thread with one IoQueue (io_uring, or plain syscalls where io_uring is refused)
// and one registered buffer pool that moves the data of several device streams at once. It knows
// only the PumpJob interface: a stream hands it a factory for its job and gets the finished job
// back. A session with W workers spreads its devices over them, so the number of data-moving
// threads is the migration's choice, not the device count. Callers keep their own (mostly idle)
// control threads: Run() hands a pump to the worker and waits.
#ifndef MIGMOVER_TRANSPORT_STREAM_PUMP_WORKER_H_
#define MIGMOVER_TRANSPORT_STREAM_PUMP_WORKER_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "api/peer_wire.h"
#include "transport/base/unique_fd.h"
#include "transport/stream/buffer_pool.h"
#include "transport/stream/pump_job.h"
#include "transport/io/io_engine.h"
#include "transport/io/io_queue.h"

namespace migmover::stream {

class PumpWorker {
 public:
  // `buffers` buffers of `chunk_size` bytes (+ frame headroom) are shared by the worker's
  // concurrent pumps; a pump waits for its share when they are all taken.
  // `engine`: the IoQueue backend (io_queue_factory.h). Errors: the queue's or the pool's.
  static absl::StatusOr<std::unique_ptr<PumpWorker>> Start(
      uint32_t buffers, uint32_t chunk_size, io::IoEngine engine = io::IoEngine::kAuto);

  // min(`workers`, `streams`) workers for `streams` long-lived streams spread over them round
  // robin, each stream holding up to `buffers_per_stream` buffers at once, so every stream of a
  // worker fits its pool together.
  static absl::StatusOr<std::vector<std::unique_ptr<PumpWorker>>> StartPool(
      uint32_t workers, size_t streams, uint32_t buffers_per_stream, uint32_t chunk_size,
      io::IoEngine engine = io::IoEngine::kAuto);
  ~PumpWorker();

  // Makes a job on the worker's thread, ring and `slots_wanted` of its buffers (waiting for
  // them if they are taken), drives it with the worker's other jobs until it is Done(), and
  // hands it back for its result; blocks the caller meanwhile. `make` runs on the worker
  // thread. If the worker's ring breaks, every job on it is aborted with the ring's error (see
  // PumpJob::Abort) and later requests fail with it. Errors: Cancelled when the worker is
  // stopping; the ring's failure for a request made after it broke.
  using JobFactory = std::function<std::unique_ptr<PumpJob>(
      io::IoQueue* ring, BufferPool* pool, std::span<const uint32_t> slots, uint32_t job_id)>;
  absl::StatusOr<std::unique_ptr<PumpJob>> RunJob(uint32_t slots_wanted, JobFactory make);

  uint32_t chunk_size() const { return chunk_size_; }
  // Jobs this worker has driven to Done() so far (any thread).
  uint64_t jobs_done() const { return jobs_done_.load(std::memory_order_relaxed); }

 private:
  struct Request;
  PumpWorker() = default;
  void Loop();
  void WakeRing();

  uint32_t chunk_size_ = 0;
  uint32_t buffers_ = 0;
  io::IoEngine engine_ = io::IoEngine::kAuto;
  std::unique_ptr<io::IoQueue> ring_;
  std::unique_ptr<BufferPool> pool_;
  UniqueFd wake_fd_;  // eventfd: a new request or shutdown.
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> jobs_done_{0};
  absl::Mutex mu_;
  std::deque<Request*> queue_ ABSL_GUARDED_BY(mu_);
  absl::Status start_status_ ABSL_GUARDED_BY(mu_);
  absl::Status failed_ ABSL_GUARDED_BY(mu_);  // The ring broke: no more jobs.
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace migmover::stream

#endif  // MIGMOVER_TRANSPORT_STREAM_PUMP_WORKER_H_
