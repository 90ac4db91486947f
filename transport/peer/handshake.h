// The destination side of the peer handshake: read a HELLO, answer HELLO_ACK.
#ifndef MIGMOVER_TRANSPORT_PEER_HANDSHAKE_H_
#define MIGMOVER_TRANSPORT_PEER_HANDSHAKE_H_

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "transport/peer/frame_codec.h"

namespace migmover::peer {

// Reads the first frame of a new connection, which must be a valid HELLO whose version range
// includes ours. Errors: DataLoss (not a HELLO, malformed), FailedPrecondition (no common
// version), DeadlineExceeded, Unavailable.
absl::StatusOr<Hello> ReadHello(int fd, absl::Time deadline);

// Answers the HELLO: code 0 accepts the stream; anything else refuses it with the message.
absl::Status SendHelloAck(int fd, const absl::Status& verdict, uint32_t device,
                          absl::Time deadline);

}  // namespace migmover::peer

#endif  // MIGMOVER_TRANSPORT_PEER_HANDSHAKE_H_
