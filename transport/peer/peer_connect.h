// Opening a daemon-to-daemon connection, either end: TCP, the socket tuned to notice a silent
// peer, then (when the daemon has TLS credentials) the TLS 1.3 handshake, which leaves one fd to
// use as the plain socket was used (transport/tls/tls_handshake.h).
#ifndef MIGMOVER_TRANSPORT_PEER_PEER_CONNECT_H_
#define MIGMOVER_TRANSPORT_PEER_PEER_CONNECT_H_

#include <atomic>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "transport/base/unique_fd.h"
#include "transport/net/socket.h"
#include "transport/tls/tls_context.h"

namespace migmover::peer {

struct PeerConnection {
  UniqueFd fd;
  // "plaintext", or the TLS connection's Describe().
  std::string security;
};

// Source side: connects to `peer` within `timeout` and, with `tls`, runs the handshake as the
// client. Errors: TcpConnect's; EstablishTls's (PermissionDenied when either side refused the
// other's credentials, Unavailable for a peer without TLS).
absl::StatusOr<PeerConnection> ConnectPeer(const net::HostPort& peer, absl::Duration timeout,
                                           const tls::TlsContext* tls,
                                           absl::Duration peer_timeout);

// Destination side: a connection the peer listener accepted; with `tls`, runs the handshake as
// the server by `deadline`. Errors: EstablishTls's.
absl::StatusOr<PeerConnection> AcceptPeer(UniqueFd tcp, const tls::TlsContext* tls,
                                          absl::Time deadline, absl::Duration peer_timeout,
                                          const std::atomic<bool>* cancel = nullptr);

}  // namespace migmover::peer

#endif  // MIGMOVER_TRANSPORT_PEER_PEER_CONNECT_H_
