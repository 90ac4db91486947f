// Opening a daemon-to-daemon connection, either end: TCP, the socket tuned to notice a silent
// peer, then (when the daemon has TLS credentials) the TLS 1.3 handshake, which leaves one fd to
// use as the plain socket was used (transport/tls/tls_handshake.h).
#ifndef MIGMOVER_TRANSPORT_PEER_PEER_CONNECT_H_
#define MIGMOVER_TRANSPORT_PEER_PEER_CONNECT_H_

#include <array>
#include <atomic>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "transport/base/unique_fd.h"
#include "transport/net/socket.h"
#include "transport/tls/tls_context.h"
#include "transport/tls/tls_handshake.h"

namespace migmover::peer {

struct PeerConnection {
  UniqueFd fd;
  // "plaintext", or the TLS connection's Describe().
  std::string security;
  // Userspace TLS: why the connection failed, once it has (TlsFailureNote).
  std::shared_ptr<const tls::TlsFailureNote> tls_failure;
  // TLS ran on this connection: its AEAD authenticates every byte.
  bool tls = false;
  // The kernel carries it (kernel TLS), not a userspace relay.
  bool kernel_tls = false;
  // The TLS exporter value a HELLO on this connection is bound to (zeros in plaintext).
  std::array<uint8_t, 32> binding{};

  // `failed` (an error seen on `fd`) with the TLS layer's reason when it has one: a peer that
  // refused this daemon's certificate only closes the connection, after its alert (under
  // kernel TLS, an EIO; the alert's name stays in the kernel).
  absl::Status Explain(absl::Status failed) const;
};

// One description for a device's connections (each a PeerConnection::security): the one they
// share, or each in stripe order when they differ ("a; b").
std::string DescribeStripes(const std::vector<std::string>& security);

// Source side: connects to `peer` within `timeout`, tunes the TCP socket (`tuning`: its buffers,
// congestion control and silent-peer timeout, set before TLS so they hold under a userspace
// relay too) and, with `tls`, runs the handshake as the client. Errors: TcpConnect's;
// TuneDataSocket's; EstablishTls's (PermissionDenied when either side refused the other's
// credentials, Unavailable for a peer without TLS).
absl::StatusOr<PeerConnection> ConnectPeer(const net::HostPort& peer, absl::Duration timeout,
                                           const tls::TlsContext* tls,
                                           const net::SocketTuning& tuning);

// Destination side: a connection the peer listener accepted; tuned as ConnectPeer's, then with
// `tls` the handshake as the server by `deadline`. Errors: TuneDataSocket's, EstablishTls's.
absl::StatusOr<PeerConnection> AcceptPeer(UniqueFd tcp, const tls::TlsContext* tls,
                                          absl::Time deadline, const net::SocketTuning& tuning,
                                          const std::atomic<bool>* cancel = nullptr);

}  // namespace migmover::peer

#endif  // MIGMOVER_TRANSPORT_PEER_PEER_CONNECT_H_
