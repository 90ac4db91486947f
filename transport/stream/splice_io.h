// splice(2) helpers for the splice engines (splice_send.h, splice_receive.h). They call splice
// themselves, nonblocking, and wait for readiness on their IoQueue: io_uring's
// IORING_OP_SPLICE always runs on io-wq worker threads, which on these machines made the splice
// path slower than the copy path (bench/README.md).
#ifndef MIGMOVER_TRANSPORT_STREAM_SPLICE_IO_H_
#define MIGMOVER_TRANSPORT_STREAM_SPLICE_IO_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "transport/base/unique_fd.h"

namespace migmover::stream {

// A stream's intermediate pipe, made on its first splice pump and kept for the next ones.
struct SplicePipe {
  UniqueFd read, write;
};

// Makes `*pipe` if it is not made yet, `size` bytes large where the kernel allows it (it rounds
// to pages and caps unprivileged callers at /proc/sys/fs/pipe-max-size; a smaller pipe only
// means more splices per frame). Errors name the call ("pipe2: EMFILE").
absl::Status OpenSplicePipe(SplicePipe* pipe, uint32_t size);

// Makes `fd` O_NONBLOCK. A splice into a socket blocks unless the socket itself is nonblocking
// (SPLICE_F_NONBLOCK covers only the pipe side), and an engine on a shared worker must never
// block. Errors name the call.
absl::Status SetNonblocking(int fd, const char* what);

// One splice(2) of up to `len` bytes from `in` to `out` with SPLICE_F_MOVE | SPLICE_F_NONBLOCK:
// the bytes moved, 0 at the end of `in`, or -errno. -EAGAIN: nothing can move now (a pipe side
// empty or full, a nonblocking socket with no data or no room); wait for readiness and call
// again.
ssize_t SpliceOnce(int in, int out, size_t len);

}  // namespace migmover::stream

#endif  // MIGMOVER_TRANSPORT_STREAM_SPLICE_IO_H_
