#include "transport/stream/splice_receive.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "transport/base/errno_status.h"
#include "transport/base/status_macros.h"
#include "transport/peer/frame_codec.h"
#include "transport/stream/splice_io.h"

namespace migmover::stream {
namespace {
using transport::ReceiveResult;
using wire::FrameHeader;
constexpr absl::Duration kTick = absl::Milliseconds(100);
}  // namespace

absl::StatusOr<ReceiveResult> SpliceReceive(ReceiveStream& s, SplicePipe& pipe, int data_fd,
                                            const std::atomic<bool>& cancel) {
  s.digest_valid = false;
  if (!pipe.read.valid()) {
    ASSIGN_OR_RETURN(PipeFds p, MakePipe());
    ::fcntl(p.write.get(), F_SETPIPE_SZ,
            s.options.pipe_size ? s.options.pipe_size : s.options.chunk_size);
    pipe.read = std::move(p.read);
    pipe.write = std::move(p.write);
  }
  const int pipe_cap = std::max(::fcntl(pipe.write.get(), F_GETPIPE_SZ), 4096);
  const int sock = s.control_fd();
  SpliceWaits waits(cancel, s.options.idle_timeout, s.device);
  ReceiveResult result;
  bool ended = false;
  while (!ended) {
    uint8_t hdr[wire::kFrameHeaderSize];
    uint32_t got = 0;
    while (got < sizeof(hdr)) {
      ssize_t r = ::recv(sock, hdr + got, sizeof(hdr) - got, MSG_DONTWAIT);
      if (r > 0) {
        got += r;
        waits.Progressed();
        continue;
      }
      if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
        RETURN_IF_ERROR(waits.StillWaiting("waiting on the source"));
        WaitFd(sock, POLLIN, kTick);
        continue;
      }
      return s.RecvFailure(r == 0 ? 0 : -errno, "before END_STREAM");
    }
    ASSIGN_OR_RETURN(FrameHeader h, peer::DecodeHeader(hdr));
    uint32_t left = 0;
    RETURN_IF_ERROR(s.OnHeader(0, h, &left, &ended, &result));
    while (left > 0) {
      // Drain after every splice in: a pipe's capacity counts buffers, not bytes, and TCP fills
      // buffers with whatever a segment held, so waiting to gather a fixed amount can fill the
      // pipe with less than that and block forever.
      const ssize_t in = SpliceOnce(sock, pipe.write.get(), std::min<uint32_t>(left, pipe_cap));
      if (in == -EAGAIN || in == -EINTR) {
        RETURN_IF_ERROR(waits.StillWaiting("waiting on the source"));
        WaitFd(sock, POLLIN, kTick);
        continue;
      }
      if (in <= 0) return s.RecvFailure(static_cast<int>(in), "inside a DATA frame");
      waits.Progressed();
      uint32_t out = 0;
      while (out < static_cast<uint32_t>(in)) {
        const ssize_t r = SpliceOnce(pipe.read.get(), data_fd, in - out);
        if (r == -EAGAIN || r == -EINTR) {
          RETURN_IF_ERROR(waits.StillWaiting("waiting on the data fd"));
          WaitFd(data_fd, POLLOUT, kTick);
          continue;
        }
        if (r <= 0) {
          return ErrnoStatus(absl::StrCat("splice(pipe -> data fd ", data_fd, ", ", in - out,
                                          " bytes at stream offset ", s.offset + out, ")"),
                             r == 0 ? EIO : static_cast<int>(-r));
        }
        out += r;
        waits.Progressed();
        s.Written(static_cast<uint32_t>(r));
      }
      s.offset += in;
      left -= in;
    }
  }
  RETURN_IF_ERROR(s.rules.CheckComplete(s.offset, std::nullopt).status());
  result.total_bytes = s.offset;
  return result;
}

}  // namespace migmover::stream
