// Ring: the io_uring backend of IoQueue (transport/io/io_queue.h): one io_uring, owned by one
// worker thread. The kernel carries out the requests; READ_FIXED/WRITE_FIXED and SEND_ZC use the
// registered buffers.
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
#include "transport/io/io_queue.h"

namespace migmover::uring {

using io::Completion;

// Create() and every other call come from the one thread that owns the ring.
class Ring final : public io::IoQueue {
 public:
  // Errors: the errno of io_uring_queue_init (ENOSYS without io_uring, EPERM when
  // kernel.io_uring_disabled forbids it or a seccomp filter refuses it, ENOMEM past
  // RLIMIT_MEMLOCK on old kernels).
  static absl::StatusOr<std::unique_ptr<Ring>> Create(unsigned entries);
  ~Ring() override;
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;

  const char* engine() const override { return "io_uring"; }
  void Read(int fd, void* buf, uint32_t len, int buffer_index, uint64_t user_data) override;
  void Write(int fd, const void* buf, uint32_t len, int buffer_index,
             uint64_t user_data) override;
  void Send(int fd, const void* buf, uint32_t len, int flags, uint64_t user_data) override;
  void Recv(int fd, void* buf, uint32_t len, int flags, uint64_t user_data) override;
  void SendZeroCopy(int fd, const void* buf, uint32_t len, int flags, int buffer_index,
                    uint64_t user_data) override;
  void Poll(int fd, short events, uint64_t user_data) override;

  // A zeroed SQE, never null. If the submission queue is full, submits what is queued first
  // (backpressure). Once the ring is broken it hands out a scratch SQE that is never submitted;
  // the caller learns of the failure from its next Submit or Wait.
  io_uring_sqe* Sqe();
  // Submits what is queued now, without waiting for anything. EAGAIN/EINTR leave the SQEs
  // queued for the next call (backpressure). Errors: the ring's failure, naming the call.
  absl::Status Submit() override;

  // Submits queued SQEs, waits up to `timeout` for one completion, then also takes every other
  // completion already posted, up to out.size(): one io_uring_enter for a burst of completions.
  // Errors: the ring's failure ("io_uring_submit_and_wait_timeout: EBADF"); never EINTR, ETIME
  // or EBUSY, which are retried or handled as backpressure.
  absl::StatusOr<size_t> WaitBatch(absl::Duration timeout, std::span<Completion> out) override;

  // Registers `iovecs` as fixed buffers (READ_FIXED/WRITE_FIXED take their index).
  absl::Status RegisterBuffers(std::span<const iovec> iovecs) override;

  // Both submit at once; errors as Submit's.
  absl::Status Cancel(uint64_t user_data) override;
  absl::Status CancelFd(int fd) override;

  const absl::Status& status() const override { return failed_; }

  io_uring* raw() { return &ring_; }

 private:
  Ring() = default;
  // One completion (false on timeout).
  absl::StatusOr<bool> WaitOne(absl::Duration timeout, Completion* out);
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

}  // namespace migmover::uring

#endif  // MIGMOVER_TRANSPORT_URING_RING_H_
