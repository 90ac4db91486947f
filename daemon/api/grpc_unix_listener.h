// GrpcUnixListener: the gRPC API's unix socket, accepted by the daemon itself so that every
// agent connection is checked against the LocalAccess policy (SO_PEERCRED) before gRPC sees a
// byte of it; an allowed connection is handed to the server (grpc::AddInsecureChannelFromFd),
// a refused one is closed (the client sees UNAVAILABLE) and logged with the peer's pid and uid.
// The socket file is created with its mode, never looser (net::UnixListen).
//
// Threads: one of its own (mm-grpc-accept), which only accepts, checks and hands over (gRPC
// serves the connection on its own threads). Start and the destructor from the owner.
#ifndef MIGMOVER_DAEMON_API_GRPC_UNIX_LISTENER_H_
#define MIGMOVER_DAEMON_API_GRPC_UNIX_LISTENER_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "daemon/access/local_access.h"
#include "daemon/base/rate_limited_log.h"
#include "grpcpp/server.h"
#include "transport/base/unique_fd.h"

namespace migmover {

class GrpcUnixListener {
 public:
  // Listens on `path` with mode `mode` and feeds allowed connections to `server`, which must be
  // started and outlive this. `access` (not owned, outlives this) may be nullptr: anyone the
  // mode lets connect. Errors: the socket's, named.
  static absl::StatusOr<std::unique_ptr<GrpcUnixListener>> Start(const std::string& path,
                                                                 mode_t mode,
                                                                 const LocalAccess* access,
                                                                 grpc::Server* server);
  // Stops accepting and removes the socket file; connections already handed over stay with
  // the server.
  ~GrpcUnixListener();

 private:
  GrpcUnixListener() = default;
  void Serve();
  std::string path_;
  const LocalAccess* access_ = nullptr;
  grpc::Server* server_ = nullptr;
  UniqueFd listen_fd_;
  UniqueFd stop_fd_;
  // The listener thread's own: refusals, at most a line a second.
  RateLimitedLog refusals_{"gRPC connection refused: "};
  std::thread thread_;
};

}  // namespace migmover

#endif  // MIGMOVER_DAEMON_API_GRPC_UNIX_LISTENER_H_
