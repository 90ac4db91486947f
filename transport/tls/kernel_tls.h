// Kernel TLS (the "tls" TCP upper-layer protocol): after a TLS 1.3 handshake in userspace, the
// application keys go to the socket (TLS_TX, TLS_RX) and from then on the kernel encrypts what
// is sent and decrypts what is received, so send(2), recv(2), splice(2) and io_uring's
// operations on the plain fd carry TLS records unchanged.
#ifndef MIGMOVER_TRANSPORT_TLS_KERNEL_TLS_H_
#define MIGMOVER_TRANSPORT_TLS_KERNEL_TLS_H_

#include "absl/status/status.h"
#include "transport/tls/tls_keylog.h"

namespace migmover::tls {

enum class TlsRole { kClient, kServer };

// Hands `ssl`'s application traffic keys (derived from `secrets` with HKDF-Expand-Label, as
// RFC 8446 7.3) to TCP socket `fd`, both directions, at record sequence 0: call it right after
// the handshake, before either side sent application data through `ssl`, on a connection that
// uses no session tickets (TlsContext's rules). Errors: Unimplemented when this kernel offers
// no TLS ULP or not this cipher (the caller then stays in userspace; nothing was changed on
// `fd` that matters to it); Internal naming the setsockopt otherwise (the connection is then
// unusable).
absl::Status InstallKernelTls(int fd, const SSL* ssl, const TrafficSecrets& secrets,
                              TlsRole role);

}  // namespace migmover::tls

#endif  // MIGMOVER_TRANSPORT_TLS_KERNEL_TLS_H_
