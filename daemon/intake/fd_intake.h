// FdIntake: the unix socket on which an agent hands the daemon file descriptors (SCM_RIGHTS).
//
// Per fd the agent sends one message whose bytes are "<purpose>\n" (purpose: vfio-device,
// save-data or resume-data; at most 64 bytes) with exactly one fd attached, and reads one reply
// line: "ok <handle>\n", or "error <CODE> <message>\n". A connection may carry any number of
// such exchanges. The handle is then named in AttachDevice. Documented in api/FD_INTAKE.md.
// Each connection's peer is checked against the LocalAccess policy before it is served.
#ifndef MIGMOVER_DAEMON_INTAKE_FD_INTAKE_H_
#define MIGMOVER_DAEMON_INTAKE_FD_INTAKE_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <sys/types.h>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "daemon/access/local_access.h"
#include "daemon/base/rate_limited_log.h"
#include "daemon/intake/fd_closer.h"
#include "transport/base/unique_fd.h"

namespace migmover {

enum class FdPurpose { kVfioDevice, kSaveData, kResumeData };
const char* FdPurposeName(FdPurpose purpose);
absl::StatusOr<FdPurpose> ParseFdPurpose(absl::string_view text);

// Checks that `fd` can serve `purpose`: never an O_PATH fd (it can do no I/O); a data fd must be
// open for reading (save-data) or writing (resume-data) and be a stream (pipe, socket, character
// device or anonymous inode); a vfio-device fd must be a character device (a VFIO cdev) or a
// VFIO group's device fd (anonymous inode "[vfio-device]"), open for reading and writing.
// InvalidArgument says why.
absl::Status CheckFdForPurpose(int fd, FdPurpose purpose);

// The text of one intake request as it arrived (without its fd): "<purpose>\n", at most 64
// bytes. InvalidArgument says what is wrong.
absl::StatusOr<FdPurpose> ParseIntakeRequest(absl::string_view bytes);

// The agent's side: one reply line from the daemon, without its newline: the handle for
// "ok <handle>", the refusal (with its code) for "error <CODE> <message>", DataLoss otherwise.
absl::StatusOr<uint64_t> ParseIntakeReply(absl::string_view line);

struct ReceivedFd {
  UniqueFd fd;
  FdPurpose purpose;
};

struct FdIntakeOptions {
  // Mode of the socket file; it never exists with more permissions than this, whatever the
  // umask (fchmod before bind).
  mode_t socket_mode = 0660;
  // Who may use the socket beyond its mode (nullptr: anyone the mode lets connect). Not owned;
  // outlives the intake.
  const LocalAccess* access = nullptr;
  // A connection that sends no complete request for this long is closed.
  absl::Duration idle_timeout = absl::Seconds(5);
  // A handle not attached within this long expires and its fd is closed.
  absl::Duration handle_ttl = absl::Seconds(60);
  // Connections served at once; more are answered RESOURCE_EXHAUSTED and closed.
  size_t max_connections = 64;
  // Fds waiting for AttachDevice at once; more are refused (RESOURCE_EXHAUSTED).
  size_t max_pending = 1024;
};

// Threads: one of its own (mm-fd-intake) serves every connection from one poll loop, one
// request per ready connection per turn, with nonblocking I/O only: an idle, slow, chatty or
// unreading client costs the others one turn at most. Fds it does not keep are closed on
// FdCloser's thread (a close can block). Take is called from any thread.
class FdIntake {
 public:
  // Listens on `path` and serves until destroyed. Errors: the socket's (named), and
  // InvalidArgument for options out of range.
  static absl::StatusOr<std::unique_ptr<FdIntake>> Start(const std::string& path,
                                                         FdIntakeOptions options = {});
  ~FdIntake();

  // Takes the fd behind `handle`. NotFound for an unknown, already used or expired handle.
  absl::StatusOr<ReceivedFd> Take(uint64_t handle);

  // Fds waiting for AttachDevice now (expired ones are dropped first).
  size_t pending();

 private:
  struct Connection {
    UniqueFd fd;
    PeerCredentials peer;
    absl::Time idle_deadline;
  };
  struct Pending {
    ReceivedFd received;
    absl::Time expires;
    std::string from;  // The sender, for the expiry log line.
  };

  // What one request gets.
  struct Reply {
    std::string line;    // Empty: nothing to answer (nothing was ready).
    bool close = false;  // The connection ends (the client closed it, or its framing is lost).
  };

  FdIntake() = default;
  void Serve();
  // Accepts up to a turn's worth of connections.
  void AcceptSome(std::vector<Connection>& conns);
  // Serves one request on `c`. False when the connection is to be closed.
  bool ServeOne(Connection& c);
  // One request: receives the message and its fds (into `fds`, which the caller closes through
  // closer_ unless this kept one), validates, stores.
  Reply HandleOne(Connection& c, std::vector<UniqueFd>& fds);
  // Hands the fds of expired handles to closer_; returns the next expiry (InfiniteFuture if
  // none).
  absl::Time ExpireHandles();
  std::string path_;
  FdIntakeOptions options_;
  UniqueFd listen_fd_;
  UniqueFd stop_fd_;
  FdCloser closer_;
  // The serving thread's own: no accept before this (after EMFILE and the like).
  absl::Time accept_paused_until_ = absl::InfinitePast();
  // The serving thread's own: refusals, at most a line a second.
  RateLimitedLog refusals_{"fd intake: connection refused: "};
  std::thread thread_;
  absl::Mutex mu_;
  uint64_t next_handle_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<uint64_t, Pending> pending_ ABSL_GUARDED_BY(mu_);
};

// The agent's side: sends `fd` for `purpose` over a connection to the intake socket at `path`
// and returns the handle. Errors: the daemon's refusal (with its code) or the socket errno.
absl::StatusOr<uint64_t> SendFdToIntake(const std::string& path, FdPurpose purpose, int fd);

}  // namespace migmover

#endif  // MIGMOVER_DAEMON_INTAKE_FD_INTAKE_H_
