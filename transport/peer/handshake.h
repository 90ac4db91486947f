// Control frames on a peer connection: the handshake (HELLO, HELLO_ACK) and reading any
// non-DATA frame whole.
#ifndef MIGMOVER_TRANSPORT_PEER_HANDSHAKE_H_
#define MIGMOVER_TRANSPORT_PEER_HANDSHAKE_H_

#include <atomic>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "transport/peer/frame_codec.h"

namespace migmover::peer {

struct ControlFrame {
  wire::FrameHeader header;
  std::string payload;
};

// Reads the payload of a control frame whose header was already read and decoded.
absl::StatusOr<std::string> ReadControlPayload(int fd, const wire::FrameHeader& h,
                                               absl::Time deadline,
                                               const std::atomic<bool>* cancel = nullptr);

// Reads one whole frame that must not be DATA (whose payload belongs in the data plane's
// buffers, not here). Errors: those of RecvExact and DecodeHeader; DataLoss for DATA.
absl::StatusOr<ControlFrame> ReadControlFrame(int fd, absl::Time deadline,
                                              const std::atomic<bool>* cancel = nullptr);

// The destination's verdict on a stream, read by the source on every transport alike: OK for
// COMMIT with code 0; otherwise the frame's code with "<who>: <message>" (an ERROR that carries
// code 0 is ABORTED: the destination abandoned the stream). The verdict is the destination's
// frame number `expected_seq` on its connection or link (api/PEER_PROTOCOL.md). DataLoss for any
// other frame type or sequence number, or a seal that `key` does not match (OpenVerdict; null
// key: framing tests).
absl::Status VerdictOf(const ControlFrame& frame, absl::string_view who, uint64_t expected_seq,
                       const ControlKey* key);

// Reads the first frame of a new connection, which must be a valid HELLO whose version range
// includes ours. Errors: DataLoss (not a HELLO, malformed), FailedPrecondition (no common
// version), DeadlineExceeded, Unavailable; Cancelled once `*cancel` is raised.
absl::StatusOr<Hello> ReadHello(int fd, absl::Time deadline,
                                const std::atomic<bool>* cancel = nullptr);

// Source side: reads the destination's answer to a HELLO. OK when it accepted the stream.
// Errors: the refusal as its canonical code ("destination refused the stream: <message>"),
// DataLoss for anything but a well-formed HELLO_ACK, DeadlineExceeded, Unavailable.
// `offset`, when given, gets the HELLO_ACK's offset: where a resumed stream goes on.
absl::Status AwaitHelloAck(int fd, absl::Time deadline, uint64_t* offset = nullptr);

// Answers the HELLO: code 0 accepts the stream; anything else refuses it with the message.
// `offset`: to a resuming HELLO that it accepts, the stream bytes written into the device.
absl::Status SendHelloAck(int fd, const absl::Status& verdict, uint32_t device,
                          absl::Time deadline, uint64_t offset = 0);

}  // namespace migmover::peer

#endif  // MIGMOVER_TRANSPORT_PEER_HANDSHAKE_H_
