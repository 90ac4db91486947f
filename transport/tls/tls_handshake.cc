#include "transport/tls/tls_handshake.h"

#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "transport/base/errno_status.h"
#include "transport/tls/tls_keylog.h"
#include "transport/tls/tls_relay.h"

namespace migmover::tls {
namespace {

struct SslFree {
  void operator()(SSL* s) const { SSL_free(s); }
};

// Why a handshake failed, as the caller must treat it.
absl::Status HandshakeError(SSL* ssl, int ssl_error, int saved_errno) {
  if (ssl_error == SSL_ERROR_SYSCALL || ssl_error == SSL_ERROR_ZERO_RETURN) {
    ERR_clear_error();
    return absl::UnavailableError(
        saved_errno != 0
            ? absl::StrCat("TLS handshake: ", ErrnoStatus("TCP", saved_errno).message())
            : "TLS handshake: the peer closed the connection (a peer without TLS, or one that "
              "refused our credentials)");
  }
  const unsigned long e = ERR_peek_last_error();
  const std::string why = DrainOpenSslErrors();
  switch (ERR_GET_REASON(e)) {
    case SSL_R_WRONG_VERSION_NUMBER:
    case SSL_R_PACKET_LENGTH_TOO_LONG:
    case SSL_R_RECORD_LENGTH_MISMATCH:
    case SSL_R_HTTP_REQUEST:
    case SSL_R_UNEXPECTED_EOF_WHILE_READING:
      return absl::UnavailableError(
          absl::StrCat("TLS handshake: the peer does not speak TLS (", why, ")"));
    case SSL_R_CERTIFICATE_VERIFY_FAILED: {
      // OpenSSL's reason is only "certificate verify failed": say which check failed (an
      // unknown CA, a name outside the allow-list, an expired certificate).
      const long result = SSL_get_verify_result(ssl);
      return absl::PermissionDeniedError(
          absl::StrCat("TLS handshake: ", why, ": the peer's certificate: ",
                       X509_verify_cert_error_string(result),
                       result == X509_V_ERR_HOSTNAME_MISMATCH
                           ? " (its names are not in the allow-list, --tls_peer_names)"
                           : ""));
    }
    default:
      // Certificates, names, PSK binders, alerts from the peer: authentication.
      return absl::PermissionDeniedError(absl::StrCat("TLS handshake: ", why));
  }
}

std::string PeerIdentity(SSL* ssl, const TlsContext& context) {
  X509* cert = SSL_get1_peer_certificate(ssl);
  if (cert == nullptr) {
    return context.uses_psk()
               ? absl::StrCat("pre-shared key '", context.config().psk_identity, "'")
               : "no certificate";
  }
  char buf[512];
  X509_NAME_oneline(X509_get_subject_name(cert), buf, sizeof(buf));
  X509_free(cert);
  return buf;
}

}  // namespace

std::string TlsConnection::Describe() const {
  return absl::StrCat("TLS 1.3 ", kernel ? "in the kernel" : "in userspace", " (", cipher,
                      "), peer ", peer);
}

absl::StatusOr<TlsConnection> EstablishTls(UniqueFd tcp, TlsRole role, const TlsContext& context,
                                           absl::Time deadline, const std::atomic<bool>* cancel,
                                           KernelTlsUse kernel,
                                           std::function<void(const std::string&)> on_relay_failure) {
  const int flags = ::fcntl(tcp.get(), F_GETFL);
  if (flags < 0 || ::fcntl(tcp.get(), F_SETFL, flags | O_NONBLOCK) != 0) {
    return ErrnoStatus(absl::StrCat("fcntl(fd ", tcp.get(), ", O_NONBLOCK)"), errno);
  }
  ERR_clear_error();
  std::unique_ptr<SSL, SslFree> ssl(
      SSL_new(role == TlsRole::kClient ? context.client() : context.server()));
  if (!ssl) return absl::InternalError("SSL_new: " + DrainOpenSslErrors());
  TrafficSecrets secrets;
  SSL_set_ex_data(ssl.get(), TrafficSecretsIndex(), &secrets);
  if (SSL_set_fd(ssl.get(), tcp.get()) != 1) {
    return absl::InternalError("SSL_set_fd: " + DrainOpenSslErrors());
  }
  if (role == TlsRole::kClient) {
    SSL_set_connect_state(ssl.get());
  } else {
    SSL_set_accept_state(ssl.get());
  }
  while (true) {
    errno = 0;
    const int r = SSL_do_handshake(ssl.get());
    if (r == 1) break;
    const int saved_errno = errno;
    const int e = SSL_get_error(ssl.get(), r);
    if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
      SSL_set_ex_data(ssl.get(), TrafficSecretsIndex(), nullptr);
      return HandshakeError(ssl.get(), e, saved_errno);
    }
    // Slices, so a cancel is seen within 100 ms.
    while (true) {
      if (cancel != nullptr && cancel->load()) {
        SSL_set_ex_data(ssl.get(), TrafficSecretsIndex(), nullptr);
        return absl::CancelledError("TLS handshake cancelled");
      }
      const absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) {
        SSL_set_ex_data(ssl.get(), TrafficSecretsIndex(), nullptr);
        return absl::DeadlineExceededError("TLS handshake: the peer did not complete it in time");
      }
      pollfd p{tcp.get(), static_cast<short>(e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT), 0};
      const int slice = static_cast<int>(
          std::clamp<int64_t>(absl::ToInt64Milliseconds(left), 1, 100));
      const int ready = ::poll(&p, 1, slice);
      if (ready < 0 && errno != EINTR) {
        SSL_set_ex_data(ssl.get(), TrafficSecretsIndex(), nullptr);
        return ErrnoStatus("poll(TLS handshake)", errno);
      }
      if (ready > 0) break;
    }
  }
  SSL_set_ex_data(ssl.get(), TrafficSecretsIndex(), nullptr);

  TlsConnection c;
  c.cipher = SSL_get_cipher_name(ssl.get());
  static constexpr char kExporterLabel[] = "EXPORTER-migmover-hello-v3";
  if (SSL_export_keying_material(ssl.get(), c.binding.data(), c.binding.size(), kExporterLabel,
                                 sizeof(kExporterLabel) - 1, nullptr, 0, 0) != 1) {
    return absl::InternalError(absl::StrCat("SSL_export_keying_material(", kExporterLabel,
                                            "): ", DrainOpenSslErrors()));
  }
  c.peer = PeerIdentity(ssl.get(), context);
  if (kernel == KernelTlsUse::kAuto) {
    absl::Status k = InstallKernelTls(tcp.get(), ssl.get(), secrets, role);
    if (k.ok()) {
      // The socket goes back to what it was: the data plane sets its own modes.
      if (::fcntl(tcp.get(), F_SETFL, flags) != 0) {
        return ErrnoStatus(absl::StrCat("fcntl(fd ", tcp.get(), ", F_SETFL)"), errno);
      }
      c.kernel = true;
      c.fd = std::move(tcp);
      return c;  // The SSL goes: the kernel has the keys, and nothing more is sent through it.
    }
    if (!absl::IsUnimplemented(k)) return k;
  }
  c.tcp_fd = tcp.get();
  c.failure = std::make_shared<TlsFailureNote>();
  absl::StatusOr<UniqueFd> local = StartTlsRelay(
      ssl.release(), std::move(tcp),
      [note = c.failure, then = std::move(on_relay_failure)](const std::string& why) {
        note->Set(why);
        if (then) then(why);
      });
  if (!local.ok()) return local.status();
  c.fd = std::move(*local);
  return c;
}

}  // namespace migmover::tls
