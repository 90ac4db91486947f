// SpliceReceive: the splice engine of a device stream's destination end, for a stream on one
// connection (striped frames must be put back in order in buffers, which splice cannot do).
// Headers are received into userspace and checked; each DATA payload goes from the socket into
// a pipe and from the pipe into the data fd inside the kernel (no digest). Plain splice(2) calls
// on the calling thread with short waits between them (splice_io.h), so cancellation and the
// idle timeout are noticed within 100 ms.
#ifndef MIGMOVER_TRANSPORT_STREAM_SPLICE_RECEIVE_H_
#define MIGMOVER_TRANSPORT_STREAM_SPLICE_RECEIVE_H_

#include <atomic>

#include "absl/status/statusor.h"
#include "transport/api/device_stream.h"
#include "transport/stream/receive_stream.h"
#include "transport/stream/splice_io.h"

namespace migmover::stream {

// The whole stream, until END_STREAM and every byte is in `data_fd`, or `cancel`. Errors as
// StreamReceiver::Receive's; a refused write names the call ("splice(pipe -> data fd 12, ...)").
absl::StatusOr<transport::ReceiveResult> SpliceReceive(ReceiveStream& stream, SplicePipe& pipe,
                                                       int data_fd,
                                                       const std::atomic<bool>& cancel);

}  // namespace migmover::stream

#endif  // MIGMOVER_TRANSPORT_STREAM_SPLICE_RECEIVE_H_
