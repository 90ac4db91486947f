// SpliceSendJob: the splice engine of a device stream's source end, as a job on an IoQueue like
// the copy engine. Each frame's payload goes from the data fd into the stream's pipe and from
// the pipe into a connection inside the kernel (no userspace copy, so no digest: END_STREAM then
// carries none), its header sent just before it with MSG_MORE. The job makes the nonblocking
// splice and send calls itself and uses its queue only to wait for readiness, so it shares a
// pump worker with other streams and never blocks it. A connection of a stream that splices is
// made O_NONBLOCK (a splice into a blocking socket would block).
#ifndef MIGMOVER_TRANSPORT_STREAM_SPLICE_SEND_H_
#define MIGMOVER_TRANSPORT_STREAM_SPLICE_SEND_H_

#include <atomic>
#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "api/peer_wire.h"
#include "transport/api/device_stream.h"
#include "transport/io/io_queue.h"
#include "transport/stream/pump_job.h"
#include "transport/stream/send_stream.h"
#include "transport/stream/splice_io.h"

namespace migmover::stream {

class SpliceSendJob : public PumpJob {
 public:
  // One Pump call's worth (see DeviceStreamSender::Pump): up to `max_bytes` of `phase` from
  // `data_fd`, until it ends, `stop` or `cancel`. `pipe` is ready (PrepareSplice). `job`: its id in
  // the tags of its requests. Everything passed must outlive the job.
  static std::unique_ptr<SpliceSendJob> Create(SendStream* stream, SplicePipe* pipe,
                                               io::IoQueue* queue, uint32_t job, int data_fd,
                                               wire::Phase phase, uint64_t max_bytes,
                                               const std::atomic<bool>& stop,
                                               const std::atomic<bool>& cancel);

  // Once Done(). Errors name the call ("splice(data fd 9 -> pipe, 1048576, STOP_COPY): EIO"),
  // or carry the destination's verdict, Cancelled, or the no-progress DeadlineExceeded.
  virtual absl::StatusOr<transport::PumpResult> Result() const = 0;
  // The data fd cannot splice (EINVAL before any byte moved): nothing was sent, and the caller
  // copies instead.
  virtual bool unsupported() const = 0;
};

}  // namespace migmover::stream

#endif  // MIGMOVER_TRANSPORT_STREAM_SPLICE_SEND_H_
