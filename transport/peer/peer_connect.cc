#include "transport/peer/peer_connect.h"

#include "absl/time/clock.h"
#include "transport/base/status_macros.h"
#include "transport/tls/tls_handshake.h"

namespace migmover::peer {
namespace {

absl::StatusOr<PeerConnection> Secure(UniqueFd tcp, const tls::TlsContext* tls, tls::TlsRole role,
                                      absl::Time deadline, absl::Duration peer_timeout,
                                      const std::atomic<bool>* cancel) {
  // Tuned before TLS: under userspace TLS the data plane sees only the relay's unix end.
  RETURN_IF_ERROR(net::TuneDataSocket(tcp.get(), 0, "", peer_timeout));
  if (tls == nullptr) return PeerConnection{std::move(tcp), "plaintext"};
  ASSIGN_OR_RETURN(tls::TlsConnection c,
                   tls::EstablishTls(std::move(tcp), role, *tls, deadline, cancel));
  return PeerConnection{std::move(c.fd), c.Describe()};
}

}  // namespace

absl::StatusOr<PeerConnection> ConnectPeer(const net::HostPort& peer, absl::Duration timeout,
                                           const tls::TlsContext* tls,
                                           absl::Duration peer_timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  ASSIGN_OR_RETURN(UniqueFd tcp, net::TcpConnect(peer, timeout));
  return Secure(std::move(tcp), tls, tls::TlsRole::kClient, deadline, peer_timeout, nullptr);
}

absl::StatusOr<PeerConnection> AcceptPeer(UniqueFd tcp, const tls::TlsContext* tls,
                                          absl::Time deadline, absl::Duration peer_timeout,
                                          const std::atomic<bool>* cancel) {
  return Secure(std::move(tcp), tls, tls::TlsRole::kServer, deadline, peer_timeout, cancel);
}

}  // namespace migmover::peer
