// DaemonProcess: a real migmoverd child process on private sockets and a free loopback peer
// port, for tests and migmover-bench.
#ifndef MIGMOVER_DAEMON_TESTING_DAEMON_PROCESS_H_
#define MIGMOVER_DAEMON_TESTING_DAEMON_PROCESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "api/migmover.grpc.pb.h"
#include "grpcpp/channel.h"
#include "daemon/testing/forbid_io_uring.h"
#include "transport/base/unique_fd.h"
#include "transport/peer/peer_connect.h"
#include "transport/tls/tls_context.h"

namespace migmover::testing {

struct LaunchOptions {
  // Refuse io_uring to the daemon (forbid_io_uring.h); by default when the test target asks
  // with MIGMOVER_TEST_FORBID_IO_URING=1.
  bool forbid_io_uring = ForbidIoUringRequested();
  // Run the daemon in this network namespace (a name `ip netns add` made, under
  // /var/run/netns), listening for peers on `listen_host`.
  std::string netns;
  std::string listen_host = "127.0.0.1";
  // Peer TLS. Unless the extra flags choose (any --tls_* flag, or --plaintext_peers), the daemon
  // gets a certificate named after it (`name`, as a DNS name) from one throw-away CA that every
  // daemon this process starts shares (DefaultTlsConfig()), and accepts any peer it signed.
  bool default_tls = true;
};

// Credentials for `name` from the throw-away CA behind LaunchOptions::default_tls (created on
// first use in $TEST_TMPDIR, else a private directory in /tmp; it lives as long as the process).
// Thread-safe.
absl::StatusOr<tls::TlsConfig> DefaultTlsConfig(const std::string& name);
// The same as migmoverd flags (--tls_ca, --tls_cert, --tls_key).
absl::StatusOr<std::vector<std::string>> DefaultTlsFlags(const std::string& name);

class DaemonProcess {
 public:
  // Starts `binary` (migmoverd) named `name`, waits until it serves gRPC.
  static absl::StatusOr<std::unique_ptr<DaemonProcess>> Start(
      const std::string& binary, const std::string& name,
      const std::vector<std::string>& extra_flags = {}, LaunchOptions launch = {});
  // SIGTERM and wait.
  ~DaemonProcess();

  v1::Migmover::Stub* stub() { return stub_.get(); }
  // The gRPC channel stub() uses, for the daemon's other services (health, reflection).
  std::shared_ptr<grpc::Channel> channel() const { return channel_; }
  pid_t pid() const { return pid_; }
  const std::string& grpc_socket() const { return grpc_socket_; }
  const std::string& fd_socket() const { return fd_socket_; }
  std::string peer_address() const { return listen_host_ + ":" + std::to_string(port_); }
  const std::string& log_path() const { return log_path_; }
  // Whether the daemon runs peer TLS with the default test CA (LaunchOptions::default_tls).
  bool default_tls() const { return default_tls_; }
  // A connection to the daemon's peer port as a peer would open one: under default_tls, TLS
  // with a certificate the test CA issued to `as` (a daemon of the fleet, but not this
  // session's source); plain TCP otherwise. A HELLO sent on it must carry its `binding`.
  // Errors: ConnectPeer's.
  absl::StatusOr<peer::PeerConnection> ConnectAsPeer(const std::string& as = "intruder") const;
  // The daemon's log so far (for failure messages).
  std::string Log() const;

 private:
  DaemonProcess() = default;
  pid_t pid_ = -1;
  std::string dir_, grpc_socket_, fd_socket_, log_path_;
  std::string listen_host_ = "127.0.0.1";
  int port_ = 0;
  bool default_tls_ = false;
  std::unique_ptr<v1::Migmover::Stub> stub_;
  std::shared_ptr<grpc::Channel> channel_;
};

// The migmoverd binary in this program's runfiles (tests and `bazel run`), else next to
// this program's own binary in bazel-bin.
std::string MigmoverdPath();

}  // namespace migmover::testing

#endif  // MIGMOVER_DAEMON_TESTING_DAEMON_PROCESS_H_
