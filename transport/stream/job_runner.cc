#include "transport/stream/job_runner.h"

#include "api/peer_wire.h"
#include "transport/base/status_macros.h"
#include "transport/io/io_queue_factory.h"

namespace migmover::stream {

absl::StatusOr<std::unique_ptr<PumpJob>> JobRunner::Run(uint32_t slots,
                                                        PumpWorker::JobFactory make) {
  if (worker_ != nullptr) return worker_->RunJob(slots, std::move(make));
  if (queue_ == nullptr) {
    ASSIGN_OR_RETURN(own_queue_, io::CreateIoQueue(engine_, 64));
    queue_ = own_queue_.get();
  }
  std::span<const uint32_t> granted;
  if (slots > 0) {
    // A stream handed to a pump worker never needs its own buffers.
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
