#include "transport/stream/splice_io.h"

#include <fcntl.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "transport/base/errno_status.h"
#include "transport/base/status_macros.h"

namespace migmover::stream {

absl::Status OpenSplicePipe(SplicePipe* pipe, uint32_t size) {
  if (pipe->read.valid()) return absl::OkStatus();
  ASSIGN_OR_RETURN(PipeFds p, MakePipe());
  // EPERM: past pipe-max-size without CAP_SYS_RESOURCE; EBUSY: smaller than its contents
  // (never, it is empty). The default-sized pipe works, so neither is an error.
  if (::fcntl(p.write.get(), F_SETPIPE_SZ, size) < 0 && errno != EPERM && errno != EBUSY) {
    return ErrnoStatus(absl::StrCat("fcntl(splice pipe, F_SETPIPE_SZ, ", size, ")"), errno);
  }
  pipe->read = std::move(p.read);
  pipe->write = std::move(p.write);
  return absl::OkStatus();
}

absl::Status PrepareSplice(SplicePipe* pipe, const StreamOptions& options,
                           const std::vector<UniqueFd>& connections) {
  RETURN_IF_ERROR(OpenSplicePipe(pipe, options.pipe_size ? options.pipe_size : options.chunk_size));
  for (const UniqueFd& fd : connections) {
    RETURN_IF_ERROR(SetNonblocking(fd.get(), "peer socket"));
  }
  return absl::OkStatus();
}

absl::Status SetNonblocking(int fd, const char* what) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0) return ErrnoStatus(absl::StrCat("fcntl(", what, " fd ", fd, ", F_GETFL)"), errno);
  if ((flags & O_NONBLOCK) == 0 && ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    return ErrnoStatus(absl::StrCat("fcntl(", what, " fd ", fd, ", F_SETFL, O_NONBLOCK)"), errno);
  }
  return absl::OkStatus();
}

ssize_t SpliceOnce(int in, int out, size_t len) {
  ssize_t n = ::splice(in, nullptr, out, nullptr, len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
  return n >= 0 ? n : -errno;
}

}  // namespace migmover::stream
