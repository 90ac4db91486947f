// FrameSeal: the AEAD that seals a DPDK link's frames (api/DPDK_LINK.md, "Sealed frames"), so a
// device stream crossing Ethernet without TCP or TLS is as private and as tamper-proof as one on
// a TLS connection.
//
// ChaCha20-Poly1305 (RFC 8439) from OpenSSL, one key per direction (peer::DeriveLinkKeys). The
// 40-byte link header is the associated data, so nobody can move a sealed payload to another
// sequence number, link or frame type. The 12-byte nonce is the frame's type and its 64-bit
// number ([type, 0, 0, 0, number little-endian]): DATA frames are numbered by their position in
// the stream, ACKs by how many ACKs came before, so no (key, nonce) pair ever seals two different
// messages. A retransmission resends the same sealed bytes.
//
// Why ChaCha20-Poly1305 rather than AES-GCM: on these machines (no VAES) OpenSSL seals 16 KiB
// with ChaCha20-Poly1305 at 4.1 GB/s against AES-256-GCM's 2.8 (`openssl speed -evp`), and the
// link's one polling thread does the sealing.
//
// Not thread-safe: one thread (the link's) uses it. Owns its two OpenSSL contexts.
#ifndef MIGMOVER_TRANSPORT_DPDK_FRAME_SEAL_H_
#define MIGMOVER_TRANSPORT_DPDK_FRAME_SEAL_H_

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "api/link_wire.h"
#include "transport/peer/stream_auth.h"

namespace migmover::dpdk {

inline constexpr size_t kFrameTagSize = wire::kLinkTagSize;

class FrameSeal {
 public:
  // `send` seals what this end sends, `receive` opens what the peer sends. Errors: Internal
  // when OpenSSL has no ChaCha20-Poly1305 or refuses the key.
  static absl::StatusOr<std::unique_ptr<FrameSeal>> Create(const peer::LinkKey& send,
                                                           const peer::LinkKey& receive);
  ~FrameSeal();
  FrameSeal(const FrameSeal&) = delete;
  FrameSeal& operator=(const FrameSeal&) = delete;

  // Encrypts `payload` (n bytes, may be 0) in place, authenticating `header` (header_size bytes)
  // with it, and writes the tag to `tag`. False when OpenSSL failed: the frame must not be sent.
  bool Seal(uint8_t type, uint64_t number, const uint8_t* header, size_t header_size,
            uint8_t* payload, size_t n, uint8_t* tag);
  // Checks `tag` over `header` and `payload` and decrypts `payload` in place. False when the
  // frame is forged, damaged or sealed with another key (its payload is then garbage) or when
  // OpenSSL failed: either way the frame must be dropped.
  bool Open(uint8_t type, uint64_t number, const uint8_t* header, size_t header_size,
            uint8_t* payload, size_t n, const uint8_t* tag);

 private:
  FrameSeal() = default;
  void* seal_ = nullptr;  // EVP_CIPHER_CTX*, keyed with `send`.
  void* open_ = nullptr;  // EVP_CIPHER_CTX*, keyed with `receive`.
};

}  // namespace migmover::dpdk

#endif  // MIGMOVER_TRANSPORT_DPDK_FRAME_SEAL_H_
