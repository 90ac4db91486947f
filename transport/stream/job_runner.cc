#include "transport/stream/job_runner.h"

#include "api/peer_wire.h"
#include "transport/base/status_macros.h"
#include "transport/io/io_queue_factory.h"

namespace migmover::stream {

absl::StatusOr<std::unique_ptr<PumpJob>> JobRunner::Run(uint32_t slots, JobFactory make) {
  if (worker_ != nullptr) {
    // A pool registered with the stream's own queue names buffers the worker's queue lacks.
    if (pool_ != nullptr && pool_->registered()) pool_.reset();
    if (slots > 0 && pool_ == nullptr) {
      // Unregistered: the worker's queue is shared by streams that come and go.
      ASSIGN_OR_RETURN(pool_, BufferPool::Create(nullptr, worker_buffers_, chunk_size_,
                                                 wire::kFrameHeaderSize));
    }
    std::span<const uint32_t> granted;
    if (slots > 0) granted = pool_->all().subspan(0, std::min<size_t>(slots, pool_->count()));
    BufferPool* pool = slots > 0 ? pool_.get() : nullptr;
    absl::StatusOr<std::unique_ptr<PumpJob>> job =
        worker_->RunJob(slots > 0 ? pool_ : nullptr, [&](io::IoQueue* queue, uint32_t id) {
          return make(queue, pool, granted, id);
        });
    // A queue that broke under the job may still write into its buffers: never reuse them.
    if (!job.ok()) pool_.reset();
    return job;
  }
  if (queue_ == nullptr) {
    ASSIGN_OR_RETURN(own_queue_, io::CreateIoQueue(engine_, 64));
    queue_ = own_queue_.get();
  }
  std::span<const uint32_t> granted;
  if (slots > 0) {
    if (pool_ == nullptr) {
      ASSIGN_OR_RETURN(pool_,
                       BufferPool::Create(queue_, slots, chunk_size_, wire::kFrameHeaderSize));
    }
    granted = pool_->all().subspan(0, std::min<size_t>(slots, pool_->count()));
  }
  std::unique_ptr<PumpJob> job = make(queue_, pool_.get(), granted, 0);
  DriveJob(queue_, *job);
  return job;
}

}  // namespace migmover::stream
