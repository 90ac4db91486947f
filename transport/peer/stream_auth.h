// What the session secret does on the wire, whether or not TLS carries the connection
// (api/PEER_PROTOCOL.md, "Authentication and integrity"):
//  - a HELLO proves its sender holds the secret without sending it: an HMAC-SHA256, keyed with
//    the secret, of every HELLO field, a fresh nonce and (under TLS) the connection's exporter
//    value, so it proves the secret's holder is the TLS peer itself;
//  - every device stream carries a keyed digest: Poly1305 over the stream's bytes in order, with
//    a one-time key derived (HKDF-SHA256) from the secret, the session, the device and the
//    stream's HELLO nonce. The source draws a new nonce for every stream it opens, so no key
//    ever authenticates two streams (Poly1305's one rule); a peer without the secret can neither
//    forge a HELLO nor change a byte and fix the digest, even on a plaintext connection that
//    shows it the nonce.
// OpenSSL (libcrypto) does the cryptography. Thread-safe: no shared state.
#ifndef MIGMOVER_TRANSPORT_PEER_STREAM_AUTH_H_
#define MIGMOVER_TRANSPORT_PEER_STREAM_AUTH_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "api/peer_wire.h"

namespace migmover::peer {

using SessionSecretBytes = std::array<uint8_t, wire::kTokenSize>;
using HelloNonce = std::array<uint8_t, wire::kHelloNonceSize>;
using HelloProof = std::array<uint8_t, wire::kHelloProofSize>;
using StreamTag = std::array<uint8_t, wire::kStreamDigestSize>;
// A TLS 1.3 connection's exporter value (RFC 8446 7.5, label "EXPORTER-migmover-hello-v3"):
// the same at both ends of one connection, different on every other. Zeros on a plaintext
// connection.
using ChannelBinding = std::array<uint8_t, 32>;

// The HELLO fields a proof covers (everything the destination acts on).
struct HelloFields {
  absl::string_view session_id;
  uint32_t device = 0;
  uint32_t device_count = 0;
  uint16_t stream = 0;
  uint16_t stream_count = 0;
  uint32_t link = 0;
  bool heartbeat = false;
  uint64_t resume = 0;  // The resume's number; 0 for a stream's first connections.
  uint16_t min_version = 0;
  uint16_t max_version = 0;
  HelloNonce nonce{};
  // Never sent: each end puts in its own connection's, so a proof holds only on the TLS
  // connection it was made for (a peer that relays it onto another gets refused).
  ChannelBinding binding{};
};

// A fresh random nonce (getrandom). Errors: getrandom's, naming it.
absl::StatusOr<HelloNonce> NewHelloNonce();

// HMAC-SHA256(secret, "migmover hello v3" || fields). Should OpenSSL fail, all zeros: a
// proof no destination accepts.
HelloProof ProveHello(const SessionSecretBytes& secret, const HelloFields& fields);
// Whether `proof` is ProveHello(secret, fields); constant time in the proof's bytes. False
// whenever the HMAC cannot be computed (never accepts on an error).
bool HelloProofValid(const SessionSecretBytes& secret, const HelloFields& fields,
                     const HelloProof& proof);

// A device stream's keys, from HKDF-SHA256 (salt: the stream's HELLO nonce; input: the secret;
// info: a label, the device index and the session id):
//  - `digest`: the one-time Poly1305 key of the stream's bytes ("migmover stream digest v3");
//  - `control`: the HMAC-SHA256 key that seals its verdict frames, COMMIT, CONFIRM and ERROR
//    ("migmover stream control v3"), so nobody on the path can forge the commit protocol.
struct StreamKey {
  std::array<uint8_t, 32> bytes{};
};
struct ControlKey {
  std::array<uint8_t, 32> bytes{};
};
struct StreamKeys {
  StreamKey digest;
  ControlKey control;
};
// Errors: Internal when OpenSSL's HKDF fails (the stream must not run without its keys).
absl::StatusOr<StreamKeys> DeriveStreamKeys(const SessionSecretBytes& secret,
                                            const HelloNonce& nonce, absl::string_view session_id,
                                            uint32_t device);

// A DPDK link's frame keys (ChaCha20-Poly1305, api/DPDK_LINK.md "Sealed frames"), one per
// direction, from HKDF-SHA256 (salt: the stream's HELLO nonce; input: the secret, then the HELLO
// connection's channel binding; info: a label, the device index and the session id). Under TLS
// the binding is the connection's exporter value, so the keys come from that TLS handshake and
// only its two ends can know them; on a plaintext connection (zeros) the secret alone keys them.
struct LinkKey {
  std::array<uint8_t, 32> bytes{};
};
struct LinkKeys {
  LinkKey to_destination;  // Seals what the source sends: its DATA frames and its ACKs.
  LinkKey to_source;       // Seals what the destination sends.
};
// Errors: Internal when OpenSSL's HKDF fails (the link must not run without its keys).
absl::StatusOr<LinkKeys> DeriveLinkKeys(const SessionSecretBytes& secret,
                                        const ChannelBinding& binding, const HelloNonce& nonce,
                                        absl::string_view session_id, uint32_t device);

// HMAC-SHA256(key, header || payload) truncated to 16 bytes: a verdict frame's seal. nullopt
// when OpenSSL fails (the frame then cannot be sealed or accepted).
std::optional<StreamTag> ControlTag(const ControlKey& key, absl::string_view header,
                                    absl::string_view payload);

// Poly1305 of a byte stream fed in pieces. Not thread-safe: one thread feeds it. Owns its
// OpenSSL context; movable.
class StreamMac {
 public:
  // Errors: Internal when OpenSSL has no Poly1305 (it always has: the default provider).
  static absl::StatusOr<std::unique_ptr<StreamMac>> Create(const StreamKey& key);
  ~StreamMac();
  StreamMac(const StreamMac&) = delete;
  StreamMac& operator=(const StreamMac&) = delete;

  void Update(const void* data, size_t n);
  // The tag of everything so far; the MAC takes no more bytes after this. nullopt when OpenSSL
  // failed on any piece: the stream then counts as unchecked, never as checked.
  std::optional<StreamTag> Finish();
  uint64_t bytes() const { return bytes_; }

 private:
  StreamMac() = default;
  void* ctx_ = nullptr;  // EVP_MAC_CTX*
  uint64_t bytes_ = 0;
  bool finished_ = false;
  bool failed_ = false;
  StreamTag tag_{};
};

// Whether two tags are equal, in constant time.
bool TagsEqual(const StreamTag& a, const StreamTag& b);

}  // namespace migmover::peer

#endif  // MIGMOVER_TRANSPORT_PEER_STREAM_AUTH_H_
