// CopySendJob: the copy engine of a device stream's source end, as a job on an IoQueue (io_uring
// or plain syscalls). It reads the data fd into the stream's buffers and sends each as a DATA
// frame on a free connection, with one read in flight (a data fd is a stream) and one frame in
// flight per connection (each connection's frames stay in stream order). The digest reads each
// frame while the kernel sends it. The destination's connection is watched all along, so a
// destination that gives up mid-stream stops the job with its verdict.
#ifndef MIGMOVER_TRANSPORT_STREAM_COPY_SEND_JOB_H_
#define MIGMOVER_TRANSPORT_STREAM_COPY_SEND_JOB_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "api/peer_wire.h"
#include "transport/api/device_stream.h"
#include "transport/io/io_queue.h"
#include "transport/stream/buffer_pool.h"
#include "transport/stream/pump_job.h"
#include "transport/stream/send_stream.h"

namespace migmover::stream {

class CopySendJob : public PumpJob {
 public:
  // One Pump call's worth (see DeviceStreamSender::Pump): up to `max_bytes` of `phase` from
  // `data_fd`, until it ends, `stop` or `cancel`. `slots`: the buffers of `pool` (registered
  // with `queue` if the stream has its own queue) it may use, at most 64; `job`: its id in the
  // tags of its requests. `stream`, `queue`, `pool` and the flags must outlive the job.
  //
  // `stream_fd` set: the data fd is a VMM's pipe or socket (PumpStreamFd): a read of 0 is its
  // end in either phase, EAGAIN is waited out in either phase (each PRE_COPY read waits behind a
  // poll, never a read, so bytes written after `stop` stay out of it), and the job ends with
  // kIdle once nothing has arrived for `idle_return` and every frame is out.
  struct StreamFd {
    absl::Duration idle_return;
    std::atomic<uint64_t>* phase_bytes = nullptr;  // Live count of the bytes sent, or null.
  };
  static std::unique_ptr<CopySendJob> Create(
      SendStream* stream, io::IoQueue* queue, BufferPool* pool, std::span<const uint32_t> slots,
      uint32_t job, int data_fd, wire::Phase phase, uint64_t max_bytes,
      const std::atomic<bool>& stop, const std::atomic<bool>& cancel,
      std::optional<StreamFd> stream_fd = std::nullopt);

  // Once Done(): how far it got and why it ended. Errors name the call ("read(data fd 9,
  // STOP_COPY): EIO", "send(peer socket fd 7, DATA): EPIPE"), or carry the destination's
  // verdict, Cancelled, or the no-progress DeadlineExceeded.
  virtual absl::StatusOr<transport::PumpResult> Result() const = 0;

  // How many buffers a job for `stream` wants: a frame in flight per connection while the
  // next ones are read, at least `stream.options.buffers`, at most `cap` (and 64).
  static uint32_t SlotsWanted(const SendStream& stream, uint32_t cap = 64);
};

}  // namespace migmover::stream

#endif  // MIGMOVER_TRANSPORT_STREAM_COPY_SEND_JOB_H_
