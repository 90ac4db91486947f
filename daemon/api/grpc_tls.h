// gRPC over TCP with mutual TLS, for agents on other hosts (migmoverd --grpc_listen; migmoverctl
// --socket=tls:HOST:PORT). The unix socket stays the local way in, guarded by SO_PEERCRED
// (grpc_unix_listener.h); over TCP the client's certificate is the credential: it must chain to
// the agents' CA, and when an allow-list of names is given, name one of them (its CN or a DNS
// subject alternative name). deploy/SECURITY.md says who may call the API.
#ifndef MIGMOVER_DAEMON_API_GRPC_TLS_H_
#define MIGMOVER_DAEMON_API_GRPC_TLS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"

namespace migmover {

struct GrpcTlsFiles {
  std::string ca_file;    // PEM: the CA the other end's certificate must chain to.
  std::string cert_file;  // PEM: this end's certificate chain.
  std::string key_file;   // PEM: its private key.
  // Server only: the client names allowed to call (empty: any certificate the CA signed).
  std::vector<std::string> client_names;
};

// Credentials for a daemon's TCP listener: TLS with a client certificate required and verified
// against `ca_file`; calls from a client outside `client_names` fail with PERMISSION_DENIED
// before they reach the service. Errors: NotFound/PermissionDenied naming a file that cannot be
// read, InvalidArgument when one is empty or the cert and key files are missing.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> GrpcServerTls(const GrpcTlsFiles& files);

// Credentials for a client (migmoverctl, tests): verifies the daemon's certificate against
// `ca_file` and presents `cert_file`. Errors: as GrpcServerTls's.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> GrpcClientTls(const GrpcTlsFiles& files);

}  // namespace migmover

#endif  // MIGMOVER_DAEMON_API_GRPC_TLS_H_
