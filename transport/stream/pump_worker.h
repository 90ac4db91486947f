// PumpWorker: one thread with one IoQueue (io_uring, or plain syscalls where io_uring is refused)
// that moves the data of several device streams at once. It knows only the PumpJob interface: a
// stream hands it a factory for its job and gets the finished job back. A daemon runs a fixed
// set of them shared by all of its sessions (pump_pool.h), so the number of data-moving threads
// is the host's choice (one per core), not the session or device count. Callers keep their own
// (mostly idle) control threads: RunJob() hands a pump to the worker and waits.
//
// Buffers are the stream's, not the worker's: each job brings its own (a BufferPool the stream
// allocated once, unregistered, as the worker's queue is shared). So a stream whose peer
// stalls holds only its own memory, and never makes another session's job wait for buffers.
#ifndef MIGMOVER_TRANSPORT_STREAM_PUMP_WORKER_H_
#define MIGMOVER_TRANSPORT_STREAM_PUMP_WORKER_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "transport/base/unique_fd.h"
#include "transport/io/io_engine.h"
#include "transport/io/io_queue.h"
#include "transport/stream/buffer_pool.h"
#include "transport/stream/pump_job.h"

namespace migmover::stream {

class PumpWorker {
 public:
  // Starts the thread and its queue of `engine` (io_queue_factory.h). Errors: the queue's
  // creation (--io_engine=uring refused).
  static absl::StatusOr<std::unique_ptr<PumpWorker>> Start(
      io::IoEngine engine = io::IoEngine::kAuto);
  // Lets the running jobs finish (and takes any asked for meanwhile), then joins the thread.
  ~PumpWorker();
  PumpWorker(const PumpWorker&) = delete;
  PumpWorker& operator=(const PumpWorker&) = delete;

  // Makes a job on the worker's thread and queue, drives it with the worker's other jobs until
  // it is Done(), and hands it back for its result; blocks the caller meanwhile. `make` runs on
  // the worker thread; the job's buffers are `buffers` (may be null for a job without any),
  // which the worker keeps alive as long as a request of the job may still reference them.
  // Errors: the queue's failure if it broke under the job (every job on it fails so, their
  // jobs and buffers kept by the worker for good, and the worker carries on with a new queue);
  // Cancelled when the worker is stopping; the failure to make a new queue after a break.
  using JobFactory = std::function<std::unique_ptr<PumpJob>(io::IoQueue* queue, uint32_t job_id)>;
  absl::StatusOr<std::unique_ptr<PumpJob>> RunJob(std::shared_ptr<BufferPool> buffers,
                                                  JobFactory make);

  // "io_uring" or "syscalls" (any thread).
  const char* engine_name() const { return engine_name_.load(std::memory_order_relaxed); }
  // It takes no more jobs: it stopped, or could not make a queue after a break (any thread).
  bool failed() const { return failed_flag_.load(std::memory_order_relaxed); }
  // Jobs this worker has driven to Done() so far (any thread).
  uint64_t jobs_done() const { return jobs_done_.load(std::memory_order_relaxed); }
  // Queues that broke under it and were replaced (any thread).
  uint64_t queue_failures() const { return queue_failures_.load(std::memory_order_relaxed); }

 private:
  struct Request;
  PumpWorker() = default;
  void Loop();
  void WakeQueue();
  absl::Status NewQueue();  // On the worker thread.

  io::IoEngine engine_ = io::IoEngine::kAuto;
  std::atomic<const char*> engine_name_{""};
  std::atomic<bool> failed_flag_{false};
  // Worker thread only (after start-up).
  std::unique_ptr<io::IoQueue> queue_;
  uint64_t wake_value_ = 0;  // Where the armed read of wake_fd_ lands.
  // Buffers of jobs aborted by a broken queue: requests the kernel may still complete could
  // write into them, so they are never freed (a queue break is a host fault, and rare).
  std::vector<std::shared_ptr<BufferPool>> quarantined_;
  std::vector<std::unique_ptr<PumpJob>> quarantined_jobs_;     // Their jobs (receive headers).
  std::vector<std::unique_ptr<io::IoQueue>> broken_queues_;  // Kept with those buffers.
  UniqueFd wake_fd_;  // eventfd: a new request or shutdown.
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> jobs_done_{0};
  std::atomic<uint64_t> queue_failures_{0};
  absl::Mutex mu_;
  std::deque<Request*> pending_ ABSL_GUARDED_BY(mu_);
  absl::Status start_status_ ABSL_GUARDED_BY(mu_);
  absl::Status failed_ ABSL_GUARDED_BY(mu_);  // No queue could be made: no more jobs.
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace migmover::stream

#endif  // MIGMOVER_TRANSPORT_STREAM_PUMP_WORKER_H_
