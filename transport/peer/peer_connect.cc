#include "transport/peer/peer_connect.h"

#include <algorithm>
#include <cerrno>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "transport/base/errno_status.h"
#include "transport/base/status_macros.h"
#include "transport/tls/tls_handshake.h"

namespace migmover::peer {
namespace {

absl::StatusOr<PeerConnection> Secure(UniqueFd tcp, const tls::TlsContext* tls, tls::TlsRole role,
                                      absl::Time deadline, const net::SocketTuning& tuning,
                                      const std::atomic<bool>* cancel) {
  // Tuned before TLS: under userspace TLS the data plane sees only the relay's unix end.
  RETURN_IF_ERROR(net::TuneDataSocket(tcp.get(), tuning));
  if (tls == nullptr) return PeerConnection{std::move(tcp), "plaintext", nullptr};
  ASSIGN_OR_RETURN(tls::TlsConnection c,
                   tls::EstablishTls(std::move(tcp), role, *tls, deadline, cancel));
  PeerConnection conn{std::move(c.fd), c.Describe(), std::move(c.failure)};
  conn.tls = true;
  conn.kernel_tls = c.kernel;
  conn.binding = c.binding;
  return conn;
}

}  // namespace

absl::Status PeerConnection::Explain(absl::Status failed) const {
  if (failed.ok()) return failed;
  if (kernel_tls && StatusErrno(failed) == EIO) {
    // Under kernel TLS a record that is not data (the peer's alert) fails the read with EIO,
    // and which alert it was stays in the kernel. In the handshake's wake it is the peer
    // refusing this daemon's credentials; its log says which check failed.
    return absl::PermissionDeniedError(absl::StrCat(
        failed.message(), " (TLS: the peer ended the connection with an alert, which kernel "
                          "TLS does not show; usually a refusal of this daemon's certificate or "
                          "key: see the peer's log)"));
  }
  if (tls_failure == nullptr) return failed;
  const std::string why = tls_failure->Get();
  if (why.empty()) return failed;
  // The peer's alert is the real reason. Certificate and PSK alerts mean it refused our
  // credentials; others (a bad record MAC: bytes changed on the way) keep the failure's code.
  const bool refused =
      absl::StrContains(why, "alert") &&
      (absl::StrContains(why, "certificate") || absl::StrContains(why, "unknown ca") ||
       absl::StrContains(why, "decrypt error") || absl::StrContains(why, "access denied") ||
       absl::StrContains(why, "handshake failure"));
  const absl::StatusCode code = refused ? absl::StatusCode::kPermissionDenied : failed.code();
  return absl::Status(code, absl::StrCat(failed.message(), " (TLS: ", why, ")"));
}

std::string DescribeStripes(const std::vector<std::string>& security) {
  if (security.empty()) return "";
  if (std::all_of(security.begin(), security.end(),
                  [&](const std::string& s) { return s == security[0]; })) {
    return security[0];
  }
  return absl::StrJoin(security, "; ");
}

absl::StatusOr<PeerConnection> ConnectPeer(const net::HostPort& peer, absl::Duration timeout,
                                           const tls::TlsContext* tls,
                                           const net::SocketTuning& tuning) {
  const absl::Time deadline = absl::Now() + timeout;
  ASSIGN_OR_RETURN(UniqueFd tcp, net::TcpConnect(peer, timeout));
  return Secure(std::move(tcp), tls, tls::TlsRole::kClient, deadline, tuning, nullptr);
}

absl::StatusOr<PeerConnection> AcceptPeer(UniqueFd tcp, const tls::TlsContext* tls,
                                          absl::Time deadline, const net::SocketTuning& tuning,
                                          const std::atomic<bool>* cancel) {
  return Secure(std::move(tcp), tls, tls::TlsRole::kServer, deadline, tuning, cancel);
}

}  // namespace migmover::peer
