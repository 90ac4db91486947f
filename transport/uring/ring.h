// Ring: one io_uring, owned by one worker thread. Thin: it gives out SQEs, submits, waits for
// completions with a timeout, and registers buffers.
//
// Backpressure is not an error: a full submission queue is submitted to make room, and a
// completion queue the kernel cannot post to (EBUSY) is drained into the ring's own backlog,
// which the next waits hand out first. Any other failure of io_uring_enter breaks the ring for
// good: the failing call records it (naming the call and errno), and every later Submit,
// Cancel and Wait returns it, so the jobs on the ring fail with that error instead of spinning.
#ifndef MIGMOVER_TRANSPORT_URING_RING_H_
#define MIGMOVER_TRANSPORT_URING_RING_H_

#include <liburing.h>
#include <sys/uio.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <span>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace migmover::uring {

struct Completion {
  uint64_t user_data = 0;
  int32_t res = 0;
  uint32_t flags = 0;
};

// Create() and every other call come from the one thread that owns the ring.
class Ring {
 public:
  // Errors: the errno of io_uring_queue_init (ENOSYS without io_uring, EPERM when
  // kernel.io_uring_disabled forbids it or a seccomp filter refuses it, ENOMEM past
  // RLIMIT_MEMLOCK on old kernels).
  static absl::StatusOr<std::unique_ptr<Ring>> Create(unsigned entries);
  ~Ring();
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;

  // A zeroed SQE, never null. If the submission queue is full, submits what is queued first
  // (backpressure). Once the ring is broken it hands out a scratch SQE that is never submitted;
  // the caller learns of the failure from its next Submit or Wait.
  io_uring_sqe* Sqe();
  // Submits what is queued now, without waiting for anything. EAGAIN/EINTR leave the SQEs
  // queued for the next call (backpressure). Errors: the ring's failure, naming the call.
  absl::Status Submit();

  // Submits queued SQEs; waits up to `timeout` for one completion and consumes it.
  // Returns false on timeout. Errors: the ring's failure ("io_uring_submit_and_wait_timeout:
  // EBADF"); never EINTR, ETIME or EBUSY, which are retried or handled as backpressure.
  absl::StatusOr<bool> Wait(absl::Duration timeout, Completion* out);

  // Like Wait, then also takes every other completion already posted, up to out.size(): one
  // io_uring_enter for a burst of completions. Returns how many were taken (0 on timeout).
  absl::StatusOr<size_t> WaitBatch(absl::Duration timeout, std::span<Completion> out);

  // Registers `iovecs` as fixed buffers (READ_FIXED/WRITE_FIXED take their index).
  absl::Status RegisterBuffers(std::span<const iovec> iovecs);

  // Cancel requests: the cancelled requests' completions (with -ECANCELED, or their real result
  // if they won the race) still arrive and must be reaped; the cancel request's own completion
  // carries kCancelTag. Both submit at once; errors as Submit's.
  // Asks the kernel to cancel the in-flight request whose user data is `user_data`.
  absl::Status Cancel(uint64_t user_data);
  // Asks the kernel to cancel every in-flight request on `fd` (and no other).
  absl::Status CancelFd(int fd);

  // OK, or the failure that broke the ring.
  const absl::Status& status() const { return failed_; }

  io_uring* raw() { return &ring_; }

 private:
  Ring() = default;
  // Moves every posted completion into backlog_, so the kernel can post again.
  void DrainToBacklog();
  // Records the first failure of `call`; returns it.
  const absl::Status& Fail(const char* call, int err);

  io_uring ring_{};
  bool initialized_ = false;
  bool buffers_registered_ = false;
  absl::Status failed_;
  std::deque<Completion> backlog_;  // Completions taken aside under backpressure, oldest first.
  io_uring_sqe scratch_{};
};

// User data of the completion of a cancel request (Cancel, CancelFd).
inline constexpr uint64_t kCancelTag = ~uint64_t{0};

// User data tags: the op kind in the top byte, a caller value below.
inline uint64_t Tag(uint8_t kind, uint64_t value) { return (uint64_t{kind} << 56) | value; }
inline uint8_t TagKind(uint64_t user_data) { return static_cast<uint8_t>(user_data >> 56); }
inline uint64_t TagValue(uint64_t user_data) { return user_data & ((uint64_t{1} << 56) - 1); }

}  // namespace migmover::uring

#endif  // MIGMOVER_TRANSPORT_URING_RING_H_
