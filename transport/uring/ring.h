// Ring: one io_uring, owned by one worker thread. Thin: it gives out SQEs (submitting to make
// room when the submission queue is full, which is backpressure, not an error), waits for
// completions with a timeout, and registers buffers.
#ifndef MIGMOVER_TRANSPORT_URING_RING_H_
#define MIGMOVER_TRANSPORT_URING_RING_H_

#include <liburing.h>
#include <sys/uio.h>

#include <cstdint>
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
  // kernel.io_uring_disabled forbids it, ENOMEM past RLIMIT_MEMLOCK on old kernels).
  static absl::StatusOr<std::unique_ptr<Ring>> Create(unsigned entries);
  ~Ring();
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;

  // A zeroed SQE. If the submission queue is full, submits what is queued first.
  io_uring_sqe* Sqe();
  // Submits what is queued now, without waiting for anything. A failure is not lost: the SQEs
  // stay queued and the next wait submits them again and reports it.
  void Submit();

  // Submits queued SQEs; waits up to `timeout` for one completion and consumes it.
  // Returns false on timeout. Errors: the io_uring_enter errno (never EINTR/ETIME/EBUSY).
  absl::StatusOr<bool> Wait(absl::Duration timeout, Completion* out);

  // Like Wait, then also takes every other completion already posted, up to out.size(): one
  // io_uring_enter for a burst of completions. Returns how many were taken (0 on timeout).
  absl::StatusOr<size_t> WaitBatch(absl::Duration timeout, std::span<Completion> out);

  // Registers `iovecs` as fixed buffers (READ_FIXED/WRITE_FIXED take their index).
  absl::Status RegisterBuffers(std::span<const iovec> iovecs);

  // Cancel requests: the cancelled requests' completions (with -ECANCELED, or their real result
  // if they won the race) still arrive and must be reaped; the cancel request's own completion
  // carries kCancelTag.
  // Asks the kernel to cancel the in-flight request whose user data is `user_data`.
  void Cancel(uint64_t user_data);
  // Asks the kernel to cancel every in-flight request on `fd` (and no other).
  void CancelFd(int fd);

  io_uring* raw() { return &ring_; }

 private:
  Ring() = default;
  io_uring ring_{};
  bool initialized_ = false;
  bool buffers_registered_ = false;
};

// User data of the completion of a cancel request (Cancel, CancelFd).
inline constexpr uint64_t kCancelTag = ~uint64_t{0};

// User data tags: the op kind in the top byte, a caller value below.
inline uint64_t Tag(uint8_t kind, uint64_t value) { return (uint64_t{kind} << 56) | value; }
inline uint8_t TagKind(uint64_t user_data) { return static_cast<uint8_t>(user_data >> 56); }
inline uint64_t TagValue(uint64_t user_data) { return user_data & ((uint64_t{1} << 56) - 1); }

}  // namespace migmover::uring

#endif  // MIGMOVER_TRANSPORT_URING_RING_H_
