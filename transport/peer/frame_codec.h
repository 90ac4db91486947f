// Encoding and bounded decoding of peer frames (api/peer_wire.h). Every field that arrives from
// the network is checked here before anything else looks at it.
#ifndef MIGMOVER_TRANSPORT_PEER_FRAME_CODEC_H_
#define MIGMOVER_TRANSPORT_PEER_FRAME_CODEC_H_

#include <array>
#include <cstdint>
#include <span>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "api/peer_wire.h"
#include "transport/peer/stream_auth.h"

namespace migmover::peer {

using wire::FrameHeader;
using wire::FrameType;
using wire::Phase;

const char* FrameTypeName(uint8_t type);
const char* PhaseName(Phase phase);

// Writes `h` into `out` in wire order.
void EncodeHeader(const FrameHeader& h, std::span<uint8_t, wire::kFrameHeaderSize> out);

// Decodes and validates a header: magic, known type and phase, zero flags, and the length bound
// for its type (DATA <= kMaxDataLength and > 0; HELLO/ACK/COMMIT/ERROR <= kMaxControlLength and
// at least their fixed part; END_PHASE 0; END_STREAM exactly its payload).
// Errors: DataLoss naming the field and value ("frame 7: DATA length 33554432 exceeds 16777216").
absl::StatusOr<FrameHeader> DecodeHeader(std::span<const uint8_t, wire::kFrameHeaderSize> in);

struct Hello {
  uint16_t min_version = wire::kProtocolVersion;
  uint16_t max_version = wire::kProtocolVersion;
  uint32_t device_count = 1;
  uint32_t device = 0;  // From the header.
  uint16_t stream = 0;
  uint16_t stream_count = 1;
  uint32_t link = 0;  // DPDK link id carrying the stream; 0 = this connection (TCP).
  bool heartbeat = false;  // The session's heartbeat connection (wire::kHelloHeartbeat).
  // Version 6: 0 for a stream's first connections; n >= 1 for its n-th resume
  // (wire::kHelloResume, the number in the header's offset; under the proof).
  uint64_t resume = 0;
  // Source side: the session secret EncodeHello proves (it is never sent). Zero in a parsed
  // HELLO.
  SessionSecretBytes token{};
  // Source side: set by the opener (NewHelloNonce), the same for every stripe of a stream.
  HelloNonce nonce{};
  // Parsed HELLOs: the proof it carried (check with ProofValid). EncodeHello computes its own.
  HelloProof proof{};
  // Never sent: the TLS connection's exporter value, set by each end from its own connection
  // (peer::PeerConnection::binding) before EncodeHello or ProofValid. Zeros in plaintext.
  ChannelBinding binding{};
  std::string session_id;

  HelloFields fields() const;
  // Whether this parsed HELLO's proof shows its sender holds `secret` (constant time).
  bool ProofValid(const SessionSecretBytes& secret) const;
};

struct PeerStatus {
  uint32_t code = 0;  // Canonical code; 0 = OK.
  std::string message;
};

struct EndStream {
  uint64_t total_bytes = 0;
  wire::DigestKind digest_kind = wire::DigestKind::kNone;
  StreamTag digest{};  // kPoly1305: the stream's keyed digest.
};

// Verdict frames (COMMIT, CONFIRM, ERROR) decide a migration's outcome, so each ends with a
// 16-byte seal: ControlTag(the stream's control key, the frame's header, the payload before
// the seal). SealVerdict appends it to a whole frame (fixing the header's length); without a
// key (framing tests only) the seal is zeros. OpenVerdict checks it and returns the payload
// before it; without a key it only strips it. Errors: DataLoss for a short frame or a seal that
// does not match (forged or changed on the way).
std::string SealVerdict(std::string frame, const ControlKey* key);
absl::StatusOr<absl::string_view> OpenVerdict(const FrameHeader& h, absl::string_view payload,
                                              const ControlKey* key);
bool IsVerdict(uint8_t type);

// A whole control frame (header + payload) as bytes, ready to send.
std::string EncodeHello(uint64_t seq, const Hello& hello);
std::string EncodeStatusFrame(FrameType type, uint64_t seq, uint32_t device,
                              const PeerStatus& status);
// `offset`: the stream bytes sent before it (version 6).
std::string EncodeEndPhase(uint64_t seq, uint32_t device, Phase phase, uint64_t offset);
std::string EncodeKeepalive(uint64_t seq, uint32_t device);
std::string EncodeConfirm(uint64_t seq, uint32_t device);
std::string EncodePing(uint64_t seq);
std::string EncodePong(uint64_t seq);
// `offset`: the stream bytes before it (every byte of the initial precopy data).
std::string EncodeInitialDataSent(uint64_t seq, uint32_t device, uint64_t offset);
std::string EncodeLoaded(uint64_t seq, uint32_t device);
// `written`: the stream bytes written into the device so far. Seal it (SealVerdict): an ACK lets
// the source drop bytes it could otherwise resend.
std::string EncodeAck(uint64_t seq, uint32_t device, uint64_t written);
std::string EncodeEndStream(uint64_t seq, uint32_t device, const EndStream& end);

// Text from a peer as it may enter a log, a status or an error: every control byte (below 0x20,
// and DEL) written as "\xNN", so a newline cannot forge a log line; the rest unchanged (UTF-8).
std::string EscapePeerText(absl::string_view text);

// Parse a control payload whose header DecodeHeader accepted. A status message is escaped
// (EscapePeerText). Errors: DataLoss for bad contents
// (session id empty or too long or not printable, device index >= device count, stream index
// >= stream count or a count outside 1..kMaxStreamsPerDevice, unknown digest
// kind, message too long).
absl::StatusOr<Hello> ParseHello(const FrameHeader& h, absl::string_view payload);
// For COMMIT and ERROR, `payload` is what OpenVerdict returned (the seal stripped).
absl::StatusOr<PeerStatus> ParseStatus(const FrameHeader& h, absl::string_view payload);
absl::StatusOr<EndStream> ParseEndStream(const FrameHeader& h, absl::string_view payload);

}  // namespace migmover::peer

#endif  // MIGMOVER_TRANSPORT_PEER_FRAME_CODEC_H_
