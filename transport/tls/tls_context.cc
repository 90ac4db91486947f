#include "transport/tls/tls_context.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "transport/tls/tls_keylog.h"

namespace migmover::tls {
namespace {

constexpr char kCipherSuites[] =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
constexpr unsigned char kAes128GcmSha256[] = {0x13, 0x01};

// The context's config, reachable from a verify or PSK callback.
const TlsConfig* ConfigOf(SSL* ssl) {
  return static_cast<const TlsConfig*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
}

// Certificate chains are checked by OpenSSL against the CA; this adds the name allow-list on
// the peer's own certificate.
int VerifyPeer(int preverify_ok, X509_STORE_CTX* store) {
  if (!preverify_ok) return 0;
  if (X509_STORE_CTX_get_error_depth(store) != 0) return 1;
  auto* ssl = static_cast<SSL*>(
      X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
  const TlsConfig* config = ConfigOf(ssl);
  if (config == nullptr || config->peer_names.empty()) return 1;
  X509* cert = X509_STORE_CTX_get_current_cert(store);
  for (const std::string& name : config->peer_names) {
    if (X509_check_host(cert, name.data(), name.size(), 0, nullptr) == 1) return 1;
  }
  X509_STORE_CTX_set_error(store, X509_V_ERR_HOSTNAME_MISMATCH);
  return 0;
}

// An external TLS 1.3 PSK as the session OpenSSL resumes from.
SSL_SESSION* PskSession(SSL* ssl, const TlsConfig& config) {
  const SSL_CIPHER* cipher = SSL_CIPHER_find(ssl, kAes128GcmSha256);
  if (cipher == nullptr) return nullptr;
  SSL_SESSION* s = SSL_SESSION_new();
  if (s == nullptr) return nullptr;
  if (!SSL_SESSION_set1_master_key(s, reinterpret_cast<const unsigned char*>(config.psk.data()),
                                   config.psk.size()) ||
      !SSL_SESSION_set_cipher(s, cipher) || !SSL_SESSION_set_protocol_version(s, TLS1_3_VERSION)) {
    SSL_SESSION_free(s);
    return nullptr;
  }
  return s;
}

int UsePsk(SSL* ssl, const EVP_MD*, const unsigned char** id, size_t* idlen,
           SSL_SESSION** sess) {
  const TlsConfig* config = ConfigOf(ssl);
  *sess = PskSession(ssl, *config);
  if (*sess == nullptr) return 0;
  *id = reinterpret_cast<const unsigned char*>(config->psk_identity.data());
  *idlen = config->psk_identity.size();
  return 1;
}

int FindPsk(SSL* ssl, const unsigned char* id, size_t idlen, SSL_SESSION** sess) {
  const TlsConfig* config = ConfigOf(ssl);
  *sess = nullptr;
  // An unknown identity: no session, and the handshake fails (no certificate to fall back to).
  if (idlen != config->psk_identity.size() ||
      std::memcmp(id, config->psk_identity.data(), idlen) != 0) {
    return 1;
  }
  *sess = PskSession(ssl, *config);
  return *sess != nullptr;
}

absl::Status FileReadable(const std::string& what, const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError(absl::StrCat(what, " is not set"));
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::StatusOr<SSL_CTX*> NewContext(const TlsConfig& config, bool server) {
  SSL_CTX* ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (ctx == nullptr) return absl::InternalError("SSL_CTX_new: " + DrainOpenSslErrors());
  auto fail = [ctx](absl::Status s) {
    SSL_CTX_free(ctx);
    return s;
  };
  SSL_CTX_set_app_data(ctx, const_cast<TlsConfig*>(&config));
  if (!SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
      !SSL_CTX_set_ciphersuites(ctx, kCipherSuites)) {
    return fail(absl::InternalError("TLS 1.3 settings: " + DrainOpenSslErrors()));
  }
  // A TCP end without close_notify reads as an end: the peer protocol frames its own ends
  // (END_STREAM), so a cut is caught there, and a killed peer is not a TLS error.
  SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_IGNORE_UNEXPECTED_EOF);
  SSL_CTX_set_num_tickets(ctx, 0);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_keylog_callback(ctx, RecordTrafficSecret);
  if (!config.psk.empty()) {
    if (server) {
      SSL_CTX_set_psk_find_session_callback(ctx, FindPsk);
    } else {
      SSL_CTX_set_psk_use_session_callback(ctx, UsePsk);
    }
    return ctx;
  }
  if (SSL_CTX_use_certificate_chain_file(ctx, config.cert_file.c_str()) != 1) {
    return fail(absl::InvalidArgumentError(absl::StrCat(
        "TLS certificate ", config.cert_file, ": ", DrainOpenSslErrors())));
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, config.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    return fail(absl::InvalidArgumentError(
        absl::StrCat("TLS key ", config.key_file, ": ", DrainOpenSslErrors())));
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    return fail(absl::InvalidArgumentError(absl::StrCat(
        "TLS key ", config.key_file, " does not match certificate ", config.cert_file)));
  }
  if (SSL_CTX_load_verify_locations(ctx, config.ca_file.c_str(), nullptr) != 1) {
    return fail(absl::InvalidArgumentError(
        absl::StrCat("TLS CA ", config.ca_file, ": ", DrainOpenSslErrors())));
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | (server ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
                     VerifyPeer);
  return ctx;
}

}  // namespace

std::string DrainOpenSslErrors() {
  std::string out;
  char buf[256];
  while (unsigned long e = ERR_get_error()) {
    ERR_error_string_n(e, buf, sizeof(buf));
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "no OpenSSL error" : out;
}

absl::StatusOr<std::shared_ptr<const TlsContext>> TlsContext::Create(const TlsConfig& config) {
  const bool certs = !config.ca_file.empty() || !config.cert_file.empty() ||
                     !config.key_file.empty();
  if (certs && !config.psk.empty()) {
    return absl::InvalidArgumentError("TLS takes certificates or a pre-shared key, not both");
  }
  if (!certs && config.psk.empty()) {
    return absl::InvalidArgumentError("TLS needs certificates (CA, certificate, key) or a PSK");
  }
  if (certs) {
    for (const auto& [what, path] : {std::pair<const char*, const std::string&>{
                                         "TLS CA file", config.ca_file},
                                     {"TLS certificate file", config.cert_file},
                                     {"TLS key file", config.key_file}}) {
      if (absl::Status s = FileReadable(what, path); !s.ok()) return s;
    }
  } else if (config.psk.size() < 32) {
    return absl::InvalidArgumentError(
        absl::StrCat("TLS pre-shared key is ", config.psk.size(), " bytes; at least 32"));
  } else if (config.psk_identity.empty() || config.psk_identity.size() > 128) {
    return absl::InvalidArgumentError("TLS PSK identity must be 1..128 bytes");
  }
  std::shared_ptr<TlsContext> c(new TlsContext());
  c->config_ = config;
  auto client = NewContext(c->config_, /*server=*/false);
  if (!client.ok()) return client.status();
  c->client_ = *client;
  auto server = NewContext(c->config_, /*server=*/true);
  if (!server.ok()) return server.status();
  c->server_ = *server;
  return std::shared_ptr<const TlsContext>(std::move(c));
}

TlsContext::~TlsContext() {
  SSL_CTX_free(client_);
  SSL_CTX_free(server_);
}

std::string TlsContext::Describe() const {
  if (uses_psk()) return absl::StrCat("pre-shared key '", config_.psk_identity, "'");
  return absl::StrCat("certificates (CA ", config_.ca_file, "; peers: ",
                      config_.peer_names.empty() ? "any the CA signed"
                                                 : absl::StrJoin(config_.peer_names, ", "),
                      ")");
}

}  // namespace migmover::tls
