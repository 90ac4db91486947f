// SpliceSend: the splice engine of a device stream's source end. Each frame's payload goes from
// the data fd into a pipe and from the pipe into a connection inside the kernel (no userspace
// copy, so no digest: END_STREAM then carries none), its header sent just before it with
// MSG_MORE. It runs on the calling thread with plain splice(2) calls and short waits between
// them (splice_io.h says why not io_uring's SPLICE), so cancellation, the bandwidth cap and the
// idle timeout are noticed within 100 ms.
#ifndef MIGMOVER_TRANSPORT_STREAM_SPLICE_SEND_H_
#define MIGMOVER_TRANSPORT_STREAM_SPLICE_SEND_H_

#include <atomic>
#include <cstdint>

#include "absl/status/statusor.h"
#include "api/peer_wire.h"
#include "transport/api/device_stream.h"
#include "transport/stream/send_stream.h"
#include "transport/stream/splice_io.h"

namespace migmover::stream {

// One Pump call's worth (see DeviceStreamSender::Pump) by splice. `*unsupported` is set, with
// nothing moved, when the data fd cannot splice (EINVAL on the first call: the caller copies
// instead). Errors name the call ("splice(data fd 9 -> pipe, 1048576, STOP_COPY): EIO"), or
// carry the destination's verdict, Cancelled, or the no-progress DeadlineExceeded.
absl::StatusOr<transport::PumpResult> SpliceSend(SendStream& stream, SplicePipe& pipe, int data_fd,
                                                 wire::Phase phase, uint64_t max_bytes,
                                                 const std::atomic<bool>& stop,
                                                 const std::atomic<bool>& cancel,
                                                 bool* unsupported);

}  // namespace migmover::stream

#endif  // MIGMOVER_TRANSPORT_STREAM_SPLICE_SEND_H_
