// Synchronous splice(2) moves for the splice data path. io_uring's IORING_OP_SPLICE always runs
// on io-wq worker threads, which on these machines made the splice path slower than the copy
// path (bench/README.md); plain splice calls on the stream's own thread, with short waits in
// between so cancellation and the idle timeout are still noticed, move the pages without that
// hop.
#ifndef MIGMOVER_TRANSPORT_STREAM_SPLICE_IO_H_
#define MIGMOVER_TRANSPORT_STREAM_SPLICE_IO_H_

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "transport/base/unique_fd.h"

namespace migmover::stream {

// A stream's intermediate pipe, made on its first splice pump and kept for the next ones.
struct SplicePipe {
  UniqueFd read, write;
};

// One splice(2) of up to `len` bytes from `in` to `out` with SPLICE_F_MOVE | SPLICE_F_NONBLOCK:
// the bytes moved, 0 at the end of `in`, or -errno. -EAGAIN means nothing can move now (a pipe
// side empty or full, a socket to read with no data, or a socket to write whose send timeout,
// SetSendTimeout, passed without room); wait with WaitFd and call again. Never blocks longer
// than a socket's send timeout.
ssize_t SpliceOnce(int in, int out, size_t len);

// Waits until `fd` reports any of `events` (poll(2)), or `timeout` passes.
void WaitFd(int fd, short events, absl::Duration timeout);

// The splice path's rule for waiting between tries: a stream that is cancelled, or that made no
// progress for the idle timeout, ends.
class SpliceWaits {
 public:
  SpliceWaits(const std::atomic<bool>& cancel, absl::Duration idle_timeout, uint32_t device)
      : cancel_(cancel), idle_timeout_(idle_timeout), device_(device) {}
  // Bytes moved: the idle timeout starts again.
  void Progressed() { last_progress_ = absl::Now(); }
  // OK to keep waiting; else Cancelled, or the no-progress error saying what it waited `on`.
  absl::Status StillWaiting(absl::string_view on) const;

 private:
  const std::atomic<bool>& cancel_;
  const absl::Duration idle_timeout_;
  const uint32_t device_;
  absl::Time last_progress_ = absl::Now();
};

// Bounds how long a blocking send on socket `fd` waits for room (SO_SNDTIMEO), so a splice into
// a blocking socket comes back to check for cancellation. io_uring and MSG_DONTWAIT sends are
// not affected.
void SetSendTimeout(int fd, absl::Duration timeout);

}  // namespace migmover::stream

#endif  // MIGMOVER_TRANSPORT_STREAM_SPLICE_IO_H_
