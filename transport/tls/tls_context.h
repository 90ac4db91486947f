// TlsContext: the credentials and rules of the TLS 1.3 every daemon-to-daemon connection runs:
// mutual authentication either by certificates (a CA both trust, each daemon's certificate and
// key, and an allow-list of the names a peer may present) or by a pre-shared key. Built once at
// start-up from flags; shared read-only by every handshake (thread-safe after Create).
//
// Rules fixed here, whatever the credentials: TLS 1.3 only; AES-128-GCM first (what kernel TLS
// offloads most widely), then AES-256-GCM and ChaCha20-Poly1305; no session tickets (a resumed
// or ticketed connection would send records kernel TLS does not count); the server requires
// the client's certificate (or the PSK).
#ifndef MIGMOVER_TRANSPORT_TLS_TLS_CONTEXT_H_
#define MIGMOVER_TRANSPORT_TLS_TLS_CONTEXT_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

typedef struct ssl_ctx_st SSL_CTX;

namespace migmover::tls {

struct TlsConfig {
  // Certificates: PEM files. `ca_file` verifies peers; `cert_file` (the chain) and `key_file`
  // are this daemon's, presented both as a server (to sources) and as a client (to
  // destinations).
  std::string ca_file, cert_file, key_file;
  // Names a peer's certificate must carry (a DNS subjectAltName, or the common name when it has
  // none); empty: any certificate the CA signed.
  std::vector<std::string> peer_names;
  // Or a pre-shared key (at least 32 bytes) under `psk_identity`, instead of certificates.
  std::string psk;
  std::string psk_identity = "migmover";
};

class TlsContext {
 public:
  // Loads and checks the credentials. Errors: InvalidArgument naming the file or setting that
  // is wrong (neither certificates nor a PSK, both, a key that does not match its certificate,
  // a PSK shorter than 32 bytes), NotFound for a missing file, Internal with OpenSSL's reason.
  static absl::StatusOr<std::shared_ptr<const TlsContext>> Create(const TlsConfig& config);
  ~TlsContext();

  SSL_CTX* client() const { return client_; }
  SSL_CTX* server() const { return server_; }
  const TlsConfig& config() const { return config_; }
  bool uses_psk() const { return !config_.psk.empty(); }
  // "certificates (CA /etc/migmover/ca.pem; peers: dst1.example, dst2.example)" or
  // "pre-shared key 'migmover'", for the start-up log line.
  std::string Describe() const;

 private:
  TlsContext() = default;
  TlsConfig config_;
  SSL_CTX* client_ = nullptr;
  SSL_CTX* server_ = nullptr;
};

// OpenSSL's error queue as one line ("error:0A000086:SSL routines::certificate verify failed"),
// emptied; "no OpenSSL error" if it is empty.
std::string DrainOpenSslErrors();

}  // namespace migmover::tls

#endif  // MIGMOVER_TRANSPORT_TLS_TLS_CONTEXT_H_
