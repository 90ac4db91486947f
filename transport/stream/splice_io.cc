#include "transport/stream/splice_io.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cerrno>

#include "transport/stream/stream_errors.h"

namespace migmover::stream {

ssize_t SpliceOnce(int in, int out, size_t len) {
  ssize_t n = ::splice(in, nullptr, out, nullptr, len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
  return n >= 0 ? n : -errno;
}

absl::Status SpliceWaits::StillWaiting(absl::string_view on) const {
  if (cancel_.load()) return absl::CancelledError("stream cancelled");
  if (absl::Now() - last_progress_ > idle_timeout_) {
    return NoProgressError(device_, idle_timeout_, on);
  }
  return absl::OkStatus();
}

void WaitFd(int fd, short events, absl::Duration timeout) {
  pollfd p{fd, events, 0};
  ::poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout)));
}

void SetSendTimeout(int fd, absl::Duration timeout) {
  timeval tv = absl::ToTimeval(timeout);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

}  // namespace migmover::stream
