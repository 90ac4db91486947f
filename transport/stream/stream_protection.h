// StreamProtection: what checks a device stream's bytes (api/PEER_PROTOCOL.md, "Integrity"),
// decided by the transport that opened its connections, before the first byte moves.
#ifndef MIGMOVER_TRANSPORT_STREAM_STREAM_PROTECTION_H_
#define MIGMOVER_TRANSPORT_STREAM_STREAM_PROTECTION_H_

#include <optional>

#include "transport/peer/stream_auth.h"

namespace migmover::stream {

struct StreamProtection {
  // The stream's digest and control keys (DeriveStreamKeys from the session secret and the
  // HELLO nonce). Every real stream has them; unset only in tests of framing alone.
  std::optional<peer::StreamKeys> keys;
  // Every connection of the stream runs TLS: its AEAD authenticates every byte on any data
  // path. Without it the stream keeps to the copy path, so the keyed digest sees every byte.
  bool aead = false;
};

}  // namespace migmover::stream

#endif  // MIGMOVER_TRANSPORT_STREAM_STREAM_PROTECTION_H_
