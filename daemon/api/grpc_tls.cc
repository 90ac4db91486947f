#include "daemon/api/grpc_tls.h"

#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "daemon/base/rate_limited_log.h"
#include "grpc/grpc_security_constants.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/security/auth_metadata_processor.h"
#include "transport/base/status_macros.h"
#include "transport/peer/frame_codec.h"

namespace migmover {
namespace {

absl::StatusOr<std::string> ReadPem(const std::string& what, const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError(absl::StrCat("gRPC TLS: no ", what, " file"));
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("gRPC TLS: cannot read the ", what, " file ", path));
  }
  std::stringstream s;
  s << in.rdbuf();
  if (s.str().empty()) {
    return absl::InvalidArgumentError(absl::StrCat("gRPC TLS: the ", what, " file ", path,
                                                   " is empty"));
  }
  return s.str();
}

// Runs before every call on the TLS listener: the client's certificate (already verified
// against the CA by the handshake) must carry an allowed name.
class ClientNameCheck final : public grpc::AuthMetadataProcessor {
 public:
  explicit ClientNameCheck(std::vector<std::string> names) : names_(std::move(names)) {}
  bool IsBlocking() const override { return false; }
  grpc::Status Process(const InputMetadata&, grpc::AuthContext* context, OutputMetadata*,
                       OutputMetadata*) override {
    std::vector<std::string> seen;
    // The CN and the DNS subject alternative names only: gRPC's
    // "x509_subject_alternative_name" mixes in email, URI and IP names, which must not pass for
    // a host name.
    for (const char* property : {GRPC_X509_CN_PROPERTY_NAME, GRPC_PEER_DNS_PROPERTY_NAME}) {
      for (const grpc::string_ref& v : context->FindPropertyValues(property)) {
        const std::string name(v.data(), v.size());
        for (const std::string& allowed : names_) {
          if (name == allowed) return grpc::Status::OK;
        }
        seen.push_back(name);
      }
    }
    const std::string who = peer::EscapePeerText(absl::StrJoin(seen, ", "));
    {
      // A client retrying in a loop must not flood the log.
      absl::MutexLock l(&mu_);
      log_.Warn(absl::StrCat("refused a call from a client whose certificate names ",
                             who.empty() ? "nothing" : who,
                             " (not in --grpc_tls_client_names)"));
    }
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        absl::StrCat("the client certificate's names (", who,
                                     ") are not allowed to call this daemon"));
  }

 private:
  const std::vector<std::string> names_;
  absl::Mutex mu_;
  RateLimitedLog log_ ABSL_GUARDED_BY(mu_){"gRPC over TLS: "};
};

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> GrpcServerTls(const GrpcTlsFiles& files) {
  grpc::SslServerCredentialsOptions o(
      GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  ASSIGN_OR_RETURN(o.pem_root_certs, ReadPem("CA (--grpc_tls_ca)", files.ca_file));
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  ASSIGN_OR_RETURN(pair.cert_chain, ReadPem("certificate (--grpc_tls_cert)", files.cert_file));
  ASSIGN_OR_RETURN(pair.private_key, ReadPem("key (--grpc_tls_key)", files.key_file));
  o.pem_key_cert_pairs.push_back(std::move(pair));
  std::shared_ptr<grpc::ServerCredentials> creds = grpc::SslServerCredentials(o);
  if (creds == nullptr) return absl::InternalError("gRPC TLS: SslServerCredentials failed");
  if (!files.client_names.empty()) {
    creds->SetAuthMetadataProcessor(std::make_shared<ClientNameCheck>(files.client_names));
  }
  return creds;
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> GrpcClientTls(const GrpcTlsFiles& files) {
  grpc::SslCredentialsOptions o;
  ASSIGN_OR_RETURN(o.pem_root_certs, ReadPem("CA (--tls_ca)", files.ca_file));
  ASSIGN_OR_RETURN(o.pem_cert_chain, ReadPem("certificate (--tls_cert)", files.cert_file));
  ASSIGN_OR_RETURN(o.pem_private_key, ReadPem("key (--tls_key)", files.key_file));
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::SslCredentials(o);
  if (creds == nullptr) return absl::InternalError("gRPC TLS: SslCredentials failed");
  return creds;
}

}  // namespace migmover
