// The errors a device stream ends with, worded once for every transport (TCP streams on
// io_uring, DPDK link streams), so an SRE reads the same message whatever carried the bytes.
#ifndef MIGMOVER_TRANSPORT_STREAM_STREAM_ERRORS_H_
#define MIGMOVER_TRANSPORT_STREAM_STREAM_ERRORS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "api/peer_wire.h"

namespace migmover::stream {

// DeadlineExceeded "device stream 3: no progress for 30s (waiting on the peer)".
absl::Status NoProgressError(uint32_t device, absl::Duration idle_timeout,
                             absl::string_view waiting_on);

// DataLoss "END_STREAM counts N bytes; M arrived".
absl::Status EndStreamTotalError(uint64_t counted, uint64_t arrived);

// DataLoss: the keyed digest of the bytes received differs from the one END_STREAM carries.
absl::Status DigestMismatchError();

// `status` (a failure of the device's data fd, not of the peer connection) marked as such: a
// destination whose device failed still has a source that can hear its verdict, whatever the
// code (a device's EPIPE is UNAVAILABLE like a lost connection's). OK stays OK.
absl::Status DeviceSideError(absl::Status status);
bool IsDeviceSide(const absl::Status& status);

// `status` (a broken or silent connection to the peer: a failed send or receive, a peer that
// closed without a verdict, no progress while waiting on it) marked as such: what a resume may
// mend, unlike a verdict, a rule broken or a device that failed. OK stays OK.
absl::Status ConnectionLostError(absl::Status status);
bool IsConnectionLost(const absl::Status& status);

// The source's ERROR frame (`payload` after header `h`) as Aborted "source abandoned the stream:
// <its message>"; DataLoss if the payload is malformed.
absl::Status SourceAbandonedError(const wire::FrameHeader& h, absl::string_view payload);

}  // namespace migmover::stream

#endif  // MIGMOVER_TRANSPORT_STREAM_STREAM_ERRORS_H_
