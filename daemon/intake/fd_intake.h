// FdIntake: the unix socket on which an agent hands the daemon file descriptors (SCM_RIGHTS).
//
// Per fd the agent sends one message whose bytes are "<purpose>\n" (purpose: vfio-device,
// save-data or resume-data; at most 64 bytes) with exactly one fd attached, and reads one reply
// line: "ok <handle>\n", or "error <CODE> <message>\n". A connection may carry any number of
// such exchanges. The handle is then named in AttachDevice. Documented in api/FD_INTAKE.md.
#ifndef MIGMOVER_DAEMON_INTAKE_FD_INTAKE_H_
#define MIGMOVER_DAEMON_INTAKE_FD_INTAKE_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "transport/base/unique_fd.h"

namespace migmover {

enum class FdPurpose { kVfioDevice, kSaveData, kResumeData };
const char* FdPurposeName(FdPurpose purpose);
absl::StatusOr<FdPurpose> ParseFdPurpose(absl::string_view text);

// Checks that `fd` can serve `purpose`: a data fd must be open for reading (save-data) or
// writing (resume-data) and be a stream (pipe, socket, character device or anonymous inode);
// a vfio-device fd must be a character device or anonymous inode. InvalidArgument says why.
absl::Status CheckFdForPurpose(int fd, FdPurpose purpose);

struct ReceivedFd {
  UniqueFd fd;
  FdPurpose purpose;
};

class FdIntake {
 public:
  // At most this many fds wait for AttachDevice at once; more are refused.
  static constexpr size_t kMaxPending = 1024;

  // Listens on `path` and serves on a thread of its own until destroyed.
  static absl::StatusOr<std::unique_ptr<FdIntake>> Start(const std::string& path);
  ~FdIntake();

  // Takes the fd behind `handle`. NotFound for an unknown or already used handle.
  absl::StatusOr<ReceivedFd> Take(uint64_t handle);

 private:
  FdIntake() = default;
  void Serve();
  void ServeConnection(UniqueFd conn);
  // One request: receives the message and fd, validates, stores. Returns the reply line, or
  // nullopt when the client closed the connection.
  std::optional<std::string> HandleOne(int conn);

  std::string path_;
  UniqueFd listen_fd_;
  UniqueFd stop_fd_;
  std::thread thread_;
  absl::Mutex mu_;
  uint64_t next_handle_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<uint64_t, ReceivedFd> pending_ ABSL_GUARDED_BY(mu_);
};

// The agent's side: sends `fd` for `purpose` over a connection to the intake socket at `path`
// and returns the handle. Errors: the daemon's refusal (with its code) or the socket errno.
absl::StatusOr<uint64_t> SendFdToIntake(const std::string& path, FdPurpose purpose, int fd);

}  // namespace migmover

#endif  // MIGMOVER_DAEMON_INTAKE_FD_INTAKE_H_
