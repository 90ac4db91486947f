// splice(2) helpers for the splice engines (splice_send.h, splice_receive.h). They call splice
// themselves, nonblocking, and wait for readiness on their IoQueue: io_uring's
// IORING_OP_SPLICE always runs on io-wq worker threads, which on these machines made the splice
// path slower than the copy path (bench/README.md).
#ifndef MIGMOVER_TRANSPORT_STREAM_SPLICE_IO_H_
#define MIGMOVER_TRANSPORT_STREAM_SPLICE_IO_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>

#include <vector>

#include "absl/status/status.h"
#include "transport/io/io_queue.h"
#include "transport/stream/stream_options.h"
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

// Readies a stream for the splice engines: its pipe (options.pipe_size bytes, or a chunk; see
// OpenSplicePipe) and its connections made nonblocking (see SetNonblocking). Errors name the call.
absl::Status PrepareSplice(SplicePipe* pipe, const StreamOptions& options,
                           const std::vector<UniqueFd>& connections);

// A splice job's one readiness wait on its IoQueue: a poll in flight, or none. The poll is only
// queued: the wait that follows (the worker's or DriveJob's) submits it with everything else.
class ReadinessWait {
 public:
  ReadinessWait(io::IoQueue* queue, uint64_t user_data) : queue_(queue), tag_(user_data) {}
  // Waits until `fd` reports `events`; the completion carrying tag() ends it (Ended()).
  void Start(int fd, short events) {
    queue_->Poll(fd, events, tag_);
    waiting_ = true;
    withdrawn_ = false;
  }
  // Withdraws the wait in flight, once; its completion still arrives. Errors: the queue's.
  absl::Status Withdraw() {
    if (!waiting_ || withdrawn_) return absl::OkStatus();
    withdrawn_ = true;
    return queue_->Cancel(tag_);
  }
  void Ended() { waiting_ = false; }
  bool waiting() const { return waiting_; }
  uint64_t tag() const { return tag_; }

 private:
  io::IoQueue* const queue_;
  const uint64_t tag_;
  bool waiting_ = false, withdrawn_ = false;
};

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
