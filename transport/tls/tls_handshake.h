// EstablishTls: the TLS 1.3 handshake on a new daemon-to-daemon TCP connection (the source is
// the client, the destination the server), then the data path it leaves: kernel TLS on the
// socket itself where the kernel has it, or a userspace TlsRelay otherwise. Either way the
// caller gets one fd to use as the plain TCP socket was used.
#ifndef MIGMOVER_TRANSPORT_TLS_TLS_HANDSHAKE_H_
#define MIGMOVER_TRANSPORT_TLS_TLS_HANDSHAKE_H_

#include <array>
#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "transport/base/unique_fd.h"
#include "transport/tls/kernel_tls.h"
#include "transport/tls/tls_context.h"

namespace migmover::tls {

enum class KernelTlsUse {
  kAuto,  // Kernel TLS where this kernel has it, userspace otherwise.
  kNever,  // Userspace always (tests, and a kernel whose TLS misbehaves).
};

// Why a userspace TLS connection failed (TlsRelay's reason: the peer's alert, a bad record), for
// whoever sees only its broken data plane end. Thread-safe.
class TlsFailureNote {
 public:
  void Set(const std::string& why) {
    absl::MutexLock l(&mu_);
    if (why_.empty()) why_ = why;
  }
  // Empty while the connection has not failed (or under kernel TLS).
  std::string Get() const {
    absl::MutexLock l(&mu_);
    return why_;
  }

 private:
  mutable absl::Mutex mu_;
  std::string why_ ABSL_GUARDED_BY(mu_);
};

struct TlsConnection {
  // Send and receive on this as on the TCP socket: the socket itself under kernel TLS, the data
  // plane's end of a TlsRelay otherwise.
  UniqueFd fd;
  // The TCP socket when it is not `fd` (userspace TLS): for socket options. -1 otherwise. The
  // relay owns it; valid while `fd` is open.
  int tcp_fd = -1;
  bool kernel = false;
  // Userspace TLS: set when the relay fails, before the data plane sees it.
  std::shared_ptr<TlsFailureNote> failure;
  // The connection's exporter value (label "EXPORTER-migmover-hello-v3", 32 bytes): what the
  // HELLO's proof is bound to (transport/peer/stream_auth.h).
  std::array<uint8_t, 32> binding{};
  std::string cipher;  // "TLS_AES_128_GCM_SHA256"
  // Who the peer proved to be: its certificate's subject ("CN=dst1.example"), or
  // "pre-shared key 'migmover'".
  std::string peer;
  // "TLS 1.3 in the kernel (TLS_AES_128_GCM_SHA256), peer CN=dst1.example"
  std::string Describe() const;
};

// Runs the handshake on `tcp` (blocking or not; it is made nonblocking) as `role`, within
// `deadline`, giving up once `*cancel` is raised. Errors: PermissionDenied when the peer failed
// authentication (no certificate, an unknown CA, a name outside the allow-list, the wrong PSK)
// or refused ours, with OpenSSL's reason; Unavailable when the connection ended or was not TLS
// (a plaintext peer); DeadlineExceeded; Cancelled; Internal otherwise. `on_relay_failure` is
// handed to the relay (userspace TLS only).
absl::StatusOr<TlsConnection> EstablishTls(
    UniqueFd tcp, TlsRole role, const TlsContext& context, absl::Time deadline,
    const std::atomic<bool>* cancel = nullptr, KernelTlsUse kernel = KernelTlsUse::kAuto,
    std::function<void(const std::string&)> on_relay_failure = {});

}  // namespace migmover::tls

#endif  // MIGMOVER_TRANSPORT_TLS_TLS_HANDSHAKE_H_
