// CopyReceiveJob: the copy engine of a device stream's destination end, as a job on an IoQueue
// (io_uring or plain syscalls). It receives frames on every connection into the stream's buffers,
// puts the pieces back in stream order, and writes them into the data fd, one write in flight
// at a time, the digest reading each piece while the kernel writes it. Each connection may hold
// at most its share of the buffers, so a connection that runs ahead stalls (TCP pushes back on
// the source) while the one carrying the next piece always has room.
#ifndef MIGMOVER_TRANSPORT_STREAM_COPY_RECEIVE_JOB_H_
#define MIGMOVER_TRANSPORT_STREAM_COPY_RECEIVE_JOB_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>

#include "absl/status/statusor.h"
#include "transport/api/device_stream.h"
#include "transport/io/io_queue.h"
#include "transport/stream/buffer_pool.h"
#include "transport/stream/pump_job.h"
#include "transport/stream/receive_stream.h"

namespace migmover::stream {

class CopyReceiveJob : public PumpJob {
 public:
  // The whole stream, until END_STREAM and every byte written to `data_fd`, or `cancel`.
  // `slots`: the buffers of `pool` (registered with `queue` if it is the stream's own) it may use,
  // at most 64; `job`:
  // its id in the tags of its requests. `stream`, `queue`, `pool` and `cancel` must outlive it.
  static std::unique_ptr<CopyReceiveJob> Create(ReceiveStream* stream, io::IoQueue* queue,
                                                BufferPool* pool, std::span<const uint32_t> slots,
                                                uint32_t job, int data_fd,
                                                const std::atomic<bool>& cancel);

  // Once Done(): the stream's totals, checked against END_STREAM (and the digest when both
  // ends saw every byte). Errors as StreamReceiver::Receive's.
  virtual absl::StatusOr<transport::ReceiveResult> Result() const = 0;

  // How many buffers a job for `stream` wants: two per connection (one filling while an
  // earlier one is written), at least `stream.options.buffers`, at most `cap` (and 64); with
  // fewer, each connection still gets one.
  static uint32_t SlotsWanted(const ReceiveStream& stream, uint32_t cap = 64);
};

}  // namespace migmover::stream

#endif  // MIGMOVER_TRANSPORT_STREAM_COPY_RECEIVE_JOB_H_
