// Helpers for migmoverctl's commands that talk to a daemon over its gRPC socket.
#ifndef MIGMOVER_DAEMON_CLI_CTL_CLIENT_H_
#define MIGMOVER_DAEMON_CLI_CTL_CLIENT_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "api/migmover.grpc.pb.h"
#include "daemon/api/grpc_tls.h"

namespace migmover::ctl {

// A stub for the daemon at `address`: its gRPC unix socket's path, or "tls:HOST:PORT" for a
// daemon's --grpc_listen (mutual TLS with the credentials UseTls set; without them every call
// fails with UNAVAILABLE).
std::unique_ptr<v1::Migmover::Stub> Connect(const std::string& address);
// The channel Connect uses, for the daemon's other services (grpc.health.v1).
std::shared_ptr<grpc::Channel> ConnectChannel(const std::string& address);
// The client certificate, key and CA for "tls:" addresses, from now on; `server_name`, when
// not empty, is the name the daemon's certificate must carry instead of the address's host
// (for an address given as an IP, e.g. "tls:ipv4:10.0.0.7:7412"). Not thread-safe: call before
// Connect. Errors: GrpcClientTls's (a file that cannot be read).
absl::Status UseTls(const GrpcTlsFiles& files, const std::string& server_name = "");

// grpc::Status -> absl::Status, naming the RPC and the daemon.
absl::Status FromGrpc(const grpc::Status& s, const std::string& rpc, const std::string& daemon);

// "1.07 GB", "512.0 MB", "3.2 kB" (decimal, as throughput is quoted).
std::string HumanBytes(double bytes);
// A one-line summary of a session status.
std::string StatusLine(const v1::SessionStatus& s);

}  // namespace migmover::ctl

#endif  // MIGMOVER_DAEMON_CLI_CTL_CLIENT_H_
