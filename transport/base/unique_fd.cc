#include "transport/base/unique_fd.h"

#include <fcntl.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "transport/base/errno_status.h"

namespace migmover {

void UniqueFd::Reset(int fd) {
  // close() errors cannot be acted on (the fd is gone either way, EINTR included on Linux).
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

absl::StatusOr<UniqueFd> UniqueFd::Dup() const {
  int fd = ::fcntl(fd_, F_DUPFD_CLOEXEC, 0);
  if (fd < 0) return ErrnoStatus(absl::StrCat("fcntl(fd ", fd_, ", F_DUPFD_CLOEXEC)"), errno);
  return UniqueFd(fd);
}

absl::StatusOr<PipeFds> MakePipe(int flags) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC | flags) != 0) {
    return ErrnoStatus(absl::StrCat("pipe2(flags ", flags, ")"), errno);
  }
  return PipeFds{UniqueFd(fds[0]), UniqueFd(fds[1])};
}

}  // namespace migmover
