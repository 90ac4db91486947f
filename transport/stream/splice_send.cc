#include "transport/stream/splice_send.h"

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
#include "transport/peer/handshake.h"
#include "transport/stream/splice_io.h"

namespace migmover::stream {
namespace {
using transport::PumpResult;
using wire::Phase;
constexpr absl::Duration kTick = absl::Milliseconds(100);
}  // namespace

absl::StatusOr<PumpResult> SpliceSend(SendStream& s, SplicePipe& pipe, int data_fd, Phase phase,
                                      uint64_t max_bytes, const std::atomic<bool>& stop,
                                      const std::atomic<bool>& cancel, bool* unsupported) {
  if (!pipe.read.valid()) {
    ASSIGN_OR_RETURN(PipeFds p, MakePipe());
    // A pipe as large as a chunk lets one splice carry a whole frame's payload (the kernel
    // rounds the size to pages and caps it at /proc/sys/fs/pipe-max-size for non-root).
    ::fcntl(p.write.get(), F_SETPIPE_SZ,
            s.options.pipe_size ? s.options.pipe_size : s.options.chunk_size);
    pipe.read = std::move(p.read);
    pipe.write = std::move(p.write);
    for (const UniqueFd& fd : s.sockets) SetSendTimeout(fd.get(), kTick);
  }
  // Splice cannot tell an empty pipe from a drained device; the fd's own mode can: only a
  // nonblocking data fd says "nothing more for now" with EAGAIN (as read(2) would).
  const bool data_fd_nonblocking = (::fcntl(data_fd, F_GETFL) & O_NONBLOCK) != 0;
  const bool precopy = phase == Phase::kPreCopy;
  SpliceWaits waits(cancel, s.options.idle_timeout, s.device);
  PumpResult result;
  uint64_t remaining = max_bytes;
  bool first = true;
  while (true) {
    if (cancel.load()) return absl::CancelledError("stream cancelled");
    if (remaining == 0) {
      result.end = PumpResult::End::kBudget;
      return result;
    }
    if (stop.load()) {
      result.end = PumpResult::End::kStopped;
      return result;
    }
    const uint32_t len = static_cast<uint32_t>(std::min<uint64_t>(s.options.chunk_size, remaining));
    const ssize_t got = SpliceOnce(data_fd, pipe.write.get(), len);
    if (got == -EINVAL && first && result.bytes == 0) {
      *unsupported = true;
      return result;
    }
    first = false;
    if (got == 0 || (precopy && (got == -ENOMSG || (got == -EAGAIN && data_fd_nonblocking)))) {
      result.end = precopy ? PumpResult::End::kDrained : PumpResult::End::kEof;
      return result;
    }
    if (got == -EAGAIN || got == -EINTR) {
      RETURN_IF_ERROR(waits.StillWaiting("waiting on the data fd"));
      WaitFd(data_fd, POLLIN, kTick);
      continue;
    }
    if (got < 0) {
      return ErrnoStatus(absl::StrCat("splice(data fd ", data_fd, " -> pipe, ", len, ", ",
                                      peer::PhaseName(phase), ")"),
                         static_cast<int>(-got));
    }
    waits.Progressed();
    s.path_used = DataPath::kSplice;
    s.digest_valid = false;  // These bytes never pass through userspace.
    const uint32_t n = static_cast<uint32_t>(got);
    if (s.options.limiter) {
      const absl::Time until = absl::Now() + s.options.limiter->Reserve(wire::kFrameHeaderSize + n);
      while (absl::Now() < until) {
        if (cancel.load()) return absl::CancelledError("stream cancelled");
        absl::SleepFor(std::min(until - absl::Now(), kTick));
      }
      waits.Progressed();
    }
    const size_t k = s.next_socket;
    s.next_socket = (k + 1) % s.sockets.size();
    const int sock = s.sockets[k].get();
    uint8_t hdr[wire::kFrameHeaderSize];
    peer::EncodeHeader(s.out.Data(k, phase, n, s.offset), hdr);
    uint32_t hdr_sent = 0;
    while (hdr_sent < sizeof(hdr)) {
      // Blocking, bounded by the send timeout; MSG_MORE keeps the header with its payload.
      ssize_t sent = ::send(sock, hdr + hdr_sent, sizeof(hdr) - hdr_sent, MSG_NOSIGNAL | MSG_MORE);
      if (sent > 0) {
        hdr_sent += sent;
        continue;
      }
      if (sent < 0 && (errno == EAGAIN || errno == EINTR)) {
        RETURN_IF_ERROR(waits.StillWaiting("waiting on the peer"));
        continue;
      }
      RETURN_IF_ERROR(s.PeerVerdict());
      return ErrnoStatus(absl::StrCat("send(peer socket fd ", sock, ", DATA header)"),
                         sent == 0 ? EPIPE : errno);
    }
    uint32_t moved = 0;
    while (moved < n) {
      const ssize_t out = SpliceOnce(pipe.read.get(), sock, n - moved);
      if (out > 0) {
        moved += out;
        waits.Progressed();
        continue;
      }
      if (out == -EAGAIN || out == -EINTR) {
        RETURN_IF_ERROR(s.PeerVerdict());
        RETURN_IF_ERROR(waits.StillWaiting("waiting on the peer"));
        continue;
      }
      RETURN_IF_ERROR(s.PeerVerdict());
      return ErrnoStatus(absl::StrCat("splice(pipe -> peer socket fd ", sock, ", ", n - moved, ")"),
                         out == 0 ? EPIPE : static_cast<int>(-out));
    }
    RETURN_IF_ERROR(s.PeerVerdict());
    s.Sent(n);
    remaining -= n;
    result.bytes += n;
  }
}

}  // namespace migmover::stream
