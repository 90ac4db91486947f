// The DPDK link's wire format: how the peer protocol's byte stream (api/peer_wire.h) crosses
// Ethernet when the transport is DPDK. Documented in api/DPDK_LINK.md; the protocol lives in
// transport/dpdk/reliable_link.h.
#ifndef MIGMOVER_API_LINK_WIRE_H_
#define MIGMOVER_API_LINK_WIRE_H_

#include <cstddef>
#include <cstdint>

namespace migmover::wire {

// IEEE 802 "Local Experimental EtherType 1": never routed, never confused with IP.
inline constexpr uint16_t kLinkEtherType = 0x88b5;
inline constexpr uint32_t kLinkMagic = 0x314c'4d4d;  // "MML1" on the wire (little-endian).
// 2: sealed links (a 16-byte tag after every frame, `check` numbers the frame).
inline constexpr uint8_t kLinkVersion = 2;

// After the 14-byte Ethernet header of every link frame; integers little-endian.
struct LinkHeader {
  uint32_t magic;
  uint8_t version;
  uint8_t type;       // LinkFrameType
  uint16_t length;    // DATA: payload bytes after this header (1..mss). ACK: 0.
  uint64_t link_id;   // Chosen by the two ends per link; frames of any other link are ignored.
  uint32_t seq;       // DATA: frame number, from 0, +1 per new frame, wrapping. ACK: 0.
  uint32_t ack;       // ACK: every DATA frame before this number is in the receiver's queue.
  uint32_t window;    // ACK: frames past `ack` the receiver has room for. DATA: 0.
  uint32_t flags;     // ACK: kLinkAck* bits. DATA: 0.
  // Unsealed link: DATA: XXH3-64 of the payload, seeded with `seq`; ACK: 0.
  // Sealed link: the frame's 64-bit number, its AEAD nonce: DATA: its position in the stream
  // (`seq` is the low 32 bits); ACK: how many ACKs its sender sent before it.
  uint64_t check;
};
static_assert(sizeof(LinkHeader) == 40);
inline constexpr size_t kLinkHeaderSize = sizeof(LinkHeader);
inline constexpr size_t kEthernetHeaderSize = 14;
// A sealed link's frames end with this many bytes: the AEAD tag over the link header and the
// (encrypted) payload.
inline constexpr size_t kLinkTagSize = 16;

enum class LinkFrameType : uint8_t {
  kData = 1,  // Stream bytes.
  kAck = 2,   // No payload: `ack` and `window` of the stream in the other direction.
};

// A DATA frame arrived out of order (one before it was lost): the sender goes back to `ack` at
// once instead of waiting for its retransmit timer.
inline constexpr uint32_t kLinkAckGap = 1u << 0;

}  // namespace migmover::wire

#endif  // MIGMOVER_API_LINK_WIRE_H_
