// The migmover peer wire format: constants and layouts shared by both daemons. Documented in
// api/PEER_PROTOCOL.md; encoding and validation live in transport/peer/frame_codec.h.
#ifndef MIGMOVER_API_PEER_WIRE_H_
#define MIGMOVER_API_PEER_WIRE_H_

#include <cstddef>
#include <cstdint>

namespace migmover::wire {

inline constexpr uint32_t kFrameMagic = 0x3146'4d4d;  // "MMF1" on the wire (little-endian).
// 2: the three-phase commit (CONFIRM). A version-1 peer commits on END_STREAM alone, which can
// leave a device running on both hosts, so it is refused rather than spoken to.
// 3: HELLO proves the session secret instead of carrying it; END_STREAM's digest is keyed.
// 4: KEEPALIVEs are sealed; DPDK link frames are sealed (link version 2). A version-3 peer's
// bare KEEPALIVEs cannot be told from forged ones.
inline constexpr uint16_t kProtocolVersion = 6;

// Every frame starts with this 32-byte header; integers are little-endian.
struct FrameHeader {
  uint32_t magic;
  uint8_t type;    // FrameType
  uint8_t phase;   // Phase
  uint16_t flags;  // 0, except kHelloHeartbeat on a HELLO.
  uint32_t device; // Device index within the session.
  uint32_t length; // Payload bytes after the header.
  uint64_t seq;    // Per-connection frame sequence number, from 0, +1 per frame sent.
  uint64_t offset; // DATA: stream offset of the payload's first byte. Otherwise 0.
};
static_assert(sizeof(FrameHeader) == 32);
inline constexpr size_t kFrameHeaderSize = sizeof(FrameHeader);

enum class FrameType : uint8_t {
  kHello = 1,      // source -> destination, first frame: HelloPayload + session id bytes.
  kHelloAck = 2,   // destination -> source: StatusPayload (code 0 = accepted) + message.
  kData = 3,       // source -> destination: stream bytes.
  kEndPhase = 4,   // source -> destination: the phase in `phase` is over (no payload).
  kEndStream = 5,  // source -> destination: EndStreamPayload. No DATA follows.
  kCommit = 6,     // destination -> source: StatusPayload; code 0 = device committed.
  kError = 7,      // either way: StatusPayload; the sender gives up on this stream.
  kKeepalive = 8,  // source -> destination, the seal alone: idle in PRE_COPY, still there.
  kConfirm = 9,    // source -> destination, the seal alone: every device of the session
                   // committed and the source is past its point of no return; the destination
                   // may run.
  kPing = 10,      // source -> destination, heartbeat connection only, no payload.
  kPong = 11,      // destination -> source, heartbeat connection only: answers a PING.
  // source -> destination, PRE_COPY, no payload; `offset` = the stream bytes before it: every
  // byte of the device's initial precopy data is in the stream before this offset (version 5).
  kInitialDataSent = 12,
  // destination -> source, heartbeat connection only, no payload: device `device` has every
  // byte before its INITIAL_DATA_SENT offset written into it (version 5; switchover readiness).
  kLoaded = 13,
  // destination -> source, on the device's first TCP connection, the seal alone; `offset` = the
  // stream bytes written into the device so far (version 6): the source need keep no byte
  // before it for a resume.
  kAck = 14,
};

// HELLO flag: this connection is the session's heartbeat (PING/PONG between the two daemons'
// own threads), not a device stream; device, stream and link are 0, stream_count 1.
inline constexpr uint16_t kHelloHeartbeat = 1;
// HELLO flag (version 6): this connection resumes device `device`'s stream after its connections
// were lost; the header's `offset` is the resume's number for the device (1, 2, ...). The nonce
// is the stream's first one (its keys stay). The HELLO_ACK that accepts it carries in its
// `offset` the stream bytes written into the device: the source sends again from there.
inline constexpr uint16_t kHelloResume = 2;

enum class Phase : uint8_t { kNone = 0, kPreCopy = 1, kStopCopy = 2 };

// Bounds every receiver enforces.
inline constexpr uint32_t kMaxDataLength = 16u << 20;    // One DATA frame's payload.
inline constexpr uint32_t kMaxControlLength = 4096;      // Any other frame's payload.
inline constexpr uint32_t kMaxSessionIdLength = 128;
inline constexpr uint32_t kMaxDevicesPerSession = 256;
inline constexpr uint32_t kMaxStreamsPerDevice = 16;
inline constexpr size_t kTokenSize = 32;  // The session secret, at its longest (never sent).
inline constexpr size_t kHelloNonceSize = 16;
inline constexpr size_t kHelloProofSize = 32;
inline constexpr size_t kStreamDigestSize = 16;
// COMMIT, CONFIRM and ERROR end with a seal of this size (api/PEER_PROTOCOL.md, Integrity).
inline constexpr size_t kVerdictSealSize = 16;

struct HelloPayload {
  uint16_t min_version;
  uint16_t max_version;
  uint32_t device_count;  // Devices the source will send in this session.
  uint16_t stream;        // This connection's index among the device's streams.
  uint16_t stream_count;  // Connections the device's stream is striped over (1..kMaxStreams).
  // 0: the device's stream travels on this connection (and its stripes). Otherwise it travels
  // on the DPDK link with this id (api/DPDK_LINK.md) and this connection carries only HELLO and
  // HELLO_ACK; stream_count must then be 1.
  uint32_t link;
  // Fresh random bytes from the source: the proof's, and (stream HELLOs) the salt of the
  // stream digest's key. Every connection of one device's stream carries the same nonce.
  uint8_t nonce[kHelloNonceSize];
  // HMAC-SHA256 keyed with the session secret over the fields above, the header's device and
  // heartbeat flag, and the session id (transport/peer/stream_auth.h): the secret itself never
  // crosses the network.
  uint8_t proof[kHelloProofSize];
  // Followed by the session id (1..kMaxSessionIdLength bytes, the rest of the payload).
};
static_assert(sizeof(HelloPayload) == 64);

struct StatusPayload {
  uint32_t code;  // A google.rpc canonical code; 0 = OK.
  uint32_t reserved;
  // Followed by a UTF-8 message (the rest of the payload).
};
static_assert(sizeof(StatusPayload) == 8);

enum class DigestKind : uint32_t {
  kNone = 0,  // Some bytes were spliced and never seen by the sender's userspace.
  // 1 was an unkeyed XXH3-64 (version 2): anyone on the path could fix it. No longer valid.
  kPoly1305 = 2,  // Keyed with the stream's one-time key (stream_auth.h): 16 bytes.
};

struct EndStreamPayload {
  uint64_t total_bytes;  // Stream bytes sent in DATA frames, all phases.
  uint32_t digest_kind;  // DigestKind
  uint32_t reserved;
  uint8_t digest[kStreamDigestSize];  // Of those bytes, in order; zeros for kNone.
};
static_assert(sizeof(EndStreamPayload) == 32);

}  // namespace migmover::wire

#endif  // MIGMOVER_API_PEER_WIRE_H_
