// SyscallQueue: the plain-syscall backend of IoQueue (transport/io/io_queue.h), for hosts that
// refuse io_uring (kernel.io_uring_disabled, a container's seccomp profile). It keeps the queued
// requests itself; WaitBatch waits for their fds with one ppoll(2) and makes each ready request's
// call (read, write, send, recv) on the calling thread.
//
// Same results as io_uring for the same fd state. io_uring waits for readiness on every file
// whose poll tracks it (pipes, sockets, eventfds), even O_NONBLOCK ones, and completes with
// -EAGAIN only for O_NONBLOCK files whose poll cannot say (a VFIO data fd in PRE_COPY with
// nothing to give). So here: a request on an O_NONBLOCK fd is tried at once; after -EAGAIN it
// waits for readiness and is tried again, and a second -EAGAIN although poll said ready means
// poll cannot tell for this file: the request completes with -EAGAIN. A request on a blocking fd
// is only tried once poll reports it ready, and then without blocking: sockets with MSG_DONTWAIT,
// other files with preadv2/pwritev2(RWF_NOWAIT) (a pipe then moves what fits, as io_uring's
// request would). A spurious wake-up of a socket or pipe just waits again. A file whose poll
// always says ready and that cannot promise not to block (RWF_NOWAIT refused, or EAGAIN from a
// regular file whose pages are not cached; a VFIO data fd) is called as it is, holding the thread
// for that one transfer, as io_uring would hold one of its io-wq threads. Zero-copy sends are
// plain sends here (no notification).
//
// Hot path: no allocation once the request table has grown to the job's depth (it is reserved
// for `entries` requests up front); one ppoll per wait plus one call per request.
#ifndef MIGMOVER_TRANSPORT_SYSCALLS_SYSCALL_QUEUE_H_
#define MIGMOVER_TRANSPORT_SYSCALLS_SYSCALL_QUEUE_H_

#include <poll.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "transport/io/io_queue.h"

namespace migmover::syscalls {

// Create() and every other call come from the one thread that owns the queue.
class SyscallQueue final : public io::IoQueue {
 public:
  // `entries`: requests expected in flight at once (the table grows past it if need be).
  static std::unique_ptr<SyscallQueue> Create(unsigned entries);

  const char* engine() const override { return "syscalls"; }
  void Read(int fd, void* buf, uint32_t len, int buffer_index, uint64_t user_data) override;
  void Write(int fd, const void* buf, uint32_t len, int buffer_index,
             uint64_t user_data) override;
  void Send(int fd, const void* buf, uint32_t len, int flags, uint64_t user_data) override;
  void Recv(int fd, void* buf, uint32_t len, int flags, uint64_t user_data) override;
  void SendZeroCopy(int fd, const void* buf, uint32_t len, int flags, int buffer_index,
                    uint64_t user_data) override;
  void Poll(int fd, short events, uint64_t user_data) override;

  // Tries the requests on nonblocking fds now. Errors: the queue's failure.
  absl::Status Submit() override;
  // Completes the matching queued requests with -ECANCELED at once (a request already
  // completed is not touched), then posts the cancel's own completion (kCancelTag).
  absl::Status Cancel(uint64_t user_data) override;
  absl::Status CancelFd(int fd) override;
  // Errors: "ppoll(N fds): EINVAL" and the like, which break the queue.
  absl::StatusOr<size_t> WaitBatch(absl::Duration timeout, std::span<io::Completion> out) override;
  // Nothing to register: the calls take the memory as it is.
  absl::Status RegisterBuffers(std::span<const iovec>) override { return absl::OkStatus(); }
  const absl::Status& status() const override { return failed_; }

 private:
  enum class Op : uint8_t { kRead, kWrite, kSend, kRecv, kPoll };
  struct Request {
    Op op;
    bool nonblocking;  // The fd is O_NONBLOCK: tried without waiting for readiness.
    bool tried;        // A nonblocking request already tried once (then it waits like others).
    uint8_t kind;      // A blocking fd's file type: kSocket, kFifo, kOtherFile.
    short events;      // What readiness it waits for.
    int fd;
    int flags;
    uint32_t len;
    void* buf;
    uint64_t user_data;
  };
  SyscallQueue() = default;
  void Add(Op op, int fd, void* buf, uint32_t len, int flags, short events, uint64_t user_data);
  enum : uint8_t { kSocket, kFifo, kOtherFile };
  // Makes the request's call; true when it completed (posted), false to wait again.
  bool Attempt(Request& r, short revents);
  // read/write on a ready blocking fd without blocking where the file allows it.
  ssize_t ReadReady(Request& r);
  ssize_t WriteReady(Request& r);
  // Tries every untried request on a nonblocking fd.
  void TryNonblocking();
  size_t Take(std::span<io::Completion> out);

  std::vector<Request> pending_;
  std::vector<pollfd> pollfds_;
  std::vector<size_t> polled_;  // pollfds_[i] waits for pending_[polled_[i]].
  std::deque<io::Completion> done_;
  absl::Status failed_;
};

}  // namespace migmover::syscalls

#endif  // MIGMOVER_TRANSPORT_SYSCALLS_SYSCALL_QUEUE_H_
