// JobRunner: where one stream's engine jobs (copy_*_job.h, splice_*.h) run: on a pump worker it
// shares with other streams, or on the stream's own IoQueue, made on first use on the thread that
// runs the job, with the stream's own buffers.
//
// Thread use: Run() blocks its caller until the job is Done(); one Run at a time per runner.
#ifndef MIGMOVER_TRANSPORT_STREAM_JOB_RUNNER_H_
#define MIGMOVER_TRANSPORT_STREAM_JOB_RUNNER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <span>

#include "absl/status/statusor.h"
#include "transport/io/io_engine.h"
#include "transport/io/io_queue.h"
#include "transport/stream/buffer_pool.h"
#include "transport/stream/pump_job.h"
#include "transport/stream/pump_worker.h"

namespace migmover::stream {

class JobRunner {
 public:
  // `queue`: the calling thread's queue, which must outlive this, or null for one of `engine`
  // made on first use. `chunk_size`: the payload size of the stream's own buffers.
  JobRunner(io::IoQueue* queue, io::IoEngine engine, uint32_t chunk_size)
      : queue_(queue), engine_(engine), chunk_size_(chunk_size) {}

  // Runs the stream's jobs on `worker` (which must outlive them) instead; null: back to the own
  // queue. `max_buffers`: the buffers the stream allocates for its jobs there (unregistered,
  // see buffer_pool.h), and so the most one job may hold.
  void set_worker(PumpWorker* worker, uint32_t max_buffers) {
    worker_ = worker;
    worker_buffers_ = max_buffers;
  }
  // The most buffers a job may ask for (on its own queue: registered with it, so bounded).
  uint32_t buffer_cap() const { return worker_ != nullptr ? worker_buffers_ : kOwnQueueBuffers; }
  static constexpr uint32_t kOwnQueueBuffers = 1024;

  // Makes a job: `make(queue, pool, slots, job_id)` with `slots` of the stream's buffers (0 for
  // a job without any: the splice engines), on the queue it runs on.
  using JobFactory = std::function<std::unique_ptr<PumpJob>(
      io::IoQueue* queue, BufferPool* pool, std::span<const uint32_t> slots, uint32_t job_id)>;

  // Makes the job with `slots` buffers and drives it until it is Done(); returns it for its
  // result. The stream's pool is made on the first Run that wants buffers: `slots` large on
  // its own queue, max_buffers large on a worker. Errors: the own queue's or pool's creation,
  // or the worker's refusal (see PumpWorker::RunJob); a queue that breaks under the job aborts
  // the job instead (its Result() says so).
  absl::StatusOr<std::unique_ptr<PumpJob>> Run(uint32_t slots, JobFactory make);

 private:
  io::IoQueue* queue_;
  const io::IoEngine engine_;
  const uint32_t chunk_size_;
  std::unique_ptr<io::IoQueue> own_queue_;
  // Shared with a worker, which keeps a pool whose job a broken queue aborted.
  std::shared_ptr<BufferPool> pool_;
  PumpWorker* worker_ = nullptr;
  uint32_t worker_buffers_ = 64;
};

}  // namespace migmover::stream

#endif  // MIGMOVER_TRANSPORT_STREAM_JOB_RUNNER_H_
