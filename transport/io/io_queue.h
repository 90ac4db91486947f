// IoQueue: the interface every data-moving engine runs on. A job queues requests (read, write,
// send, recv, poll), each tagged with 64 bits of user data, and later reaps their completions:
// the result as a syscall would return it (bytes, or -errno) and the tag. Two backends implement
// it and are chosen at run time (io_engine.h): io_uring (transport/uring/ring.h), where the
// kernel carries out the requests asynchronously, and plain syscalls
// (transport/syscalls/syscall_queue.h), which waits for readiness with ppoll(2) and then makes
// the nonblocking call itself, for hosts that refuse io_uring. Jobs see no difference beyond
// speed: the same request, on the same fd state, completes with the same result.
//
// Backpressure is not an error on either backend: a full queue makes room by submitting, a
// short transfer completes with what moved, and -EAGAIN completions ask the job to try again.
// A failure of the queue itself (io_uring_enter refused, ppoll failing) breaks it for good:
// Submit, Cancel and WaitBatch return that error, naming the call, and jobs fail with it.
//
// Thread use: a queue belongs to the one thread that created it; nothing here is thread-safe.
#ifndef MIGMOVER_TRANSPORT_IO_IO_QUEUE_H_
#define MIGMOVER_TRANSPORT_IO_IO_QUEUE_H_

#include <sys/uio.h>

#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace migmover::io {

// Completion flags (a request may complete more than once).
// SendZeroCopy: another completion, with kCompletionNotif, follows once the kernel no longer
// reads the buffer.
inline constexpr uint32_t kCompletionMore = 1u << 0;
// The buffer-release notice of a zero-copy send (its res is meaningless).
inline constexpr uint32_t kCompletionNotif = 1u << 1;

struct Completion {
  uint64_t user_data = 0;
  int32_t res = 0;  // As the syscall returns it: bytes moved (or poll's revents), or -errno.
  uint32_t flags = 0;
};

// User data of a cancel request's own completion (Cancel, CancelFd).
inline constexpr uint64_t kCancelTag = ~uint64_t{0};

// User data tags: the op kind in the top byte, a caller value below.
inline uint64_t Tag(uint8_t kind, uint64_t value) { return (uint64_t{kind} << 56) | value; }
inline uint8_t TagKind(uint64_t user_data) { return static_cast<uint8_t>(user_data >> 56); }
inline uint64_t TagValue(uint64_t user_data) { return user_data & ((uint64_t{1} << 56) - 1); }

// A buffer index for requests on memory that is not (or need not be) registered.
inline constexpr int kUnregistered = -1;

class IoQueue {
 public:
  virtual ~IoQueue() = default;

  // "io_uring" or "syscalls": what carries this queue's requests (for logs and status).
  virtual const char* engine() const = 0;

  // Queue requests. They never fail here: a broken queue drops them and its next Submit or
  // Wait says why. `buffer_index`: the buffer `buf` lies in (RegisterBuffers), or
  // kUnregistered. The memory must stay valid until the request completes.
  // read(2) at the fd's own position (data fds and eventfds are streams).
  virtual void Read(int fd, void* buf, uint32_t len, int buffer_index, uint64_t user_data) = 0;
  // write(2) at the fd's own position.
  virtual void Write(int fd, const void* buf, uint32_t len, int buffer_index,
                     uint64_t user_data) = 0;
  // send(2)/recv(2) with `flags` (MSG_NOSIGNAL, MSG_WAITALL, ...). A recv may complete with
  // fewer bytes than asked even with MSG_WAITALL; the caller asks again for the rest.
  virtual void Send(int fd, const void* buf, uint32_t len, int flags, uint64_t user_data) = 0;
  virtual void Recv(int fd, void* buf, uint32_t len, int flags, uint64_t user_data) = 0;
  // A send the kernel may make from the registered buffer without copying it; the buffer
  // stays the kernel's until a completion with kCompletionNotif arrives when the first one
  // carried kCompletionMore. Backends without it make a plain send (no notification).
  virtual void SendZeroCopy(int fd, const void* buf, uint32_t len, int flags, int buffer_index,
                            uint64_t user_data) = 0;
  // Completes once `fd` reports any of `events` (POLLIN, POLLOUT), with the reported mask.
  virtual void Poll(int fd, short events, uint64_t user_data) = 0;

  // Starts what is queued, without waiting for anything. Errors: the queue's failure.
  virtual absl::Status Submit() = 0;
  // Cancels the queued request whose user data is `user_data`, or every one on `fd` (and no
  // other). The cancelled requests still complete (-ECANCELED, or their real result if they
  // won the race) and must be reaped; the cancel's own completion carries kCancelTag.
  virtual absl::Status Cancel(uint64_t user_data) = 0;
  virtual absl::Status CancelFd(int fd) = 0;

  // Starts what is queued, waits up to `timeout` for at least one completion, and takes every
  // completion ready by then, up to out.size(). Returns how many (0 on timeout). Errors: the
  // queue's failure; never EINTR, ETIME or a full completion queue.
  virtual absl::StatusOr<size_t> WaitBatch(absl::Duration timeout, std::span<Completion> out) = 0;

  // Registers the memory later requests name by buffer index (io_uring pins it once instead
  // of per request). Errors name the call and count.
  virtual absl::Status RegisterBuffers(std::span<const iovec> iovecs) = 0;

  // OK, or the failure that broke the queue.
  virtual const absl::Status& status() const = 0;

  // One completion: true if one was taken, false on timeout.
  absl::StatusOr<bool> Wait(absl::Duration timeout, Completion* out) {
    absl::StatusOr<size_t> n = WaitBatch(timeout, std::span<Completion>(out, 1));
    if (!n.ok()) return n.status();
    return *n > 0;
  }
};

}  // namespace migmover::io

#endif  // MIGMOVER_TRANSPORT_IO_IO_QUEUE_H_
