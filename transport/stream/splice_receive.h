// SpliceReceiveJob: the splice engine of a device stream's destination end, as a job on an
// IoQueue like the copy engine, for a stream on one connection (striped frames must be put back
// in order in buffers, which splice cannot do). Headers are received into userspace and checked
// against the stream's rules; each DATA payload goes from the connection into the stream's pipe
// and from the pipe into the data fd inside the kernel (no digest). The job makes the
// nonblocking calls itself and uses its queue only to wait for readiness, so it shares a pump
// worker with other streams and never blocks it.
#ifndef MIGMOVER_TRANSPORT_STREAM_SPLICE_RECEIVE_H_
#define MIGMOVER_TRANSPORT_STREAM_SPLICE_RECEIVE_H_

#include <atomic>
#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "transport/api/device_stream.h"
#include "transport/io/io_queue.h"
#include "transport/stream/pump_job.h"
#include "transport/stream/receive_stream.h"
#include "transport/stream/splice_io.h"

namespace migmover::stream {

class SpliceReceiveJob : public PumpJob {
 public:
  // The whole stream, until END_STREAM and every byte is in `data_fd`, or `cancel`. `pipe` is ready
  // (PrepareSplice); `job`: its id in the tags of its requests. Everything must outlive the job.
  static std::unique_ptr<SpliceReceiveJob> Create(ReceiveStream* stream, SplicePipe* pipe,
                                                  io::IoQueue* queue, uint32_t job, int data_fd,
                                                  const std::atomic<bool>& cancel);

  // Once Done(). Errors as StreamReceiver::Receive's; a refused write names the call
  // ("splice(pipe -> data fd 12, ...)").
  virtual absl::StatusOr<transport::ReceiveResult> Result() const = 0;
};

}  // namespace migmover::stream

#endif  // MIGMOVER_TRANSPORT_STREAM_SPLICE_RECEIVE_H_
