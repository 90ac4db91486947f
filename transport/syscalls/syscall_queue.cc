#include "transport/syscalls/syscall_queue.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "transport/base/errno_status.h"

namespace migmover::syscalls {

std::unique_ptr<SyscallQueue> SyscallQueue::Create(unsigned entries) {
  std::unique_ptr<SyscallQueue> q(new SyscallQueue());
  q->pending_.reserve(entries);
  q->pollfds_.reserve(entries);
  q->polled_.reserve(entries);
  return q;
}

void SyscallQueue::Add(Op op, int fd, void* buf, uint32_t len, int flags, short events,
                       uint64_t user_data) {
  if (!failed_.ok()) return;
  const int fl = ::fcntl(fd, F_GETFL);
  // A bad fd completes with the call's own error, as io_uring would report it.
  const bool nonblocking = fl < 0 || (fl & O_NONBLOCK) != 0;
  uint8_t kind = kOtherFile;
  if (!nonblocking && (op == Op::kRead || op == Op::kWrite)) {
    struct stat st;
    if (::fstat(fd, &st) == 0) {
      kind = S_ISSOCK(st.st_mode) ? kSocket : S_ISFIFO(st.st_mode) ? kFifo : kOtherFile;
    }
  }
  pending_.push_back(Request{op, nonblocking && op != Op::kPoll, false, kind, events, fd, flags,
                             len, buf, user_data});
}

void SyscallQueue::Read(int fd, void* buf, uint32_t len, int, uint64_t user_data) {
  Add(Op::kRead, fd, buf, len, 0, POLLIN, user_data);
}

void SyscallQueue::Write(int fd, const void* buf, uint32_t len, int, uint64_t user_data) {
  Add(Op::kWrite, fd, const_cast<void*>(buf), len, 0, POLLOUT, user_data);
}

void SyscallQueue::Send(int fd, const void* buf, uint32_t len, int flags, uint64_t user_data) {
  Add(Op::kSend, fd, const_cast<void*>(buf), len, flags, POLLOUT, user_data);
}

void SyscallQueue::Recv(int fd, void* buf, uint32_t len, int flags, uint64_t user_data) {
  Add(Op::kRecv, fd, buf, len, flags, POLLIN, user_data);
}

void SyscallQueue::SendZeroCopy(int fd, const void* buf, uint32_t len, int flags, int,
                                uint64_t user_data) {
  Send(fd, buf, len, flags, user_data);
}

void SyscallQueue::Poll(int fd, short events, uint64_t user_data) {
  Add(Op::kPoll, fd, nullptr, 0, 0, events, user_data);
}

ssize_t SyscallQueue::ReadReady(Request& r) {
  if (r.kind == kSocket) return ::recv(r.fd, r.buf, r.len, MSG_DONTWAIT);
  iovec iov{r.buf, r.len};
  const ssize_t n = ::preadv2(r.fd, &iov, 1, -1, RWF_NOWAIT);
  if (n >= 0 || (errno != EOPNOTSUPP && !(errno == EAGAIN && r.kind == kOtherFile))) return n;
  // The file cannot promise not to block (or, polled ready, still would): the plain call.
  return ::read(r.fd, r.buf, r.len);
}

ssize_t SyscallQueue::WriteReady(Request& r) {
  if (r.kind == kSocket) return ::send(r.fd, r.buf, r.len, MSG_DONTWAIT);
  iovec iov{r.buf, r.len};
  const ssize_t n = ::pwritev2(r.fd, &iov, 1, -1, RWF_NOWAIT);
  if (n >= 0 || (errno != EOPNOTSUPP && !(errno == EAGAIN && r.kind == kOtherFile))) return n;
  return ::write(r.fd, r.buf, r.len);
}

bool SyscallQueue::Attempt(Request& r, short revents) {
  ssize_t n = 0;
  // Blocking sockets are only called once ready; MSG_DONTWAIT turns a spurious wake-up into
  // EAGAIN instead of a stall. Nonblocking fds return EAGAIN by themselves.
  const int dontwait = r.nonblocking ? 0 : MSG_DONTWAIT;
  switch (r.op) {
    case Op::kRead:
      n = r.nonblocking ? ::read(r.fd, r.buf, r.len) : ReadReady(r);
      break;
    case Op::kWrite:
      n = r.nonblocking ? ::write(r.fd, r.buf, r.len) : WriteReady(r);
      break;
    case Op::kSend:
      n = ::send(r.fd, r.buf, r.len, r.flags | dontwait);
      break;
    case Op::kRecv:
      // With MSG_DONTWAIT, MSG_WAITALL returns what has arrived: the job asks for the rest.
      n = ::recv(r.fd, r.buf, r.len, r.flags | dontwait);
      break;
    case Op::kPoll:
      done_.push_back(io::Completion{r.user_data, revents, 0});
      return true;
  }
  if (n < 0 && errno == EINTR) return false;
  // Blocking fd: a spurious wake-up, wait again. Nonblocking fd tried before it was polled:
  // wait for readiness. Nonblocking and ready, yet EAGAIN: its poll cannot tell, so do as
  // io_uring does for such a file and complete with -EAGAIN.
  if (n < 0 && errno == EAGAIN && (!r.nonblocking || revents == 0)) return false;
  done_.push_back(io::Completion{r.user_data, n < 0 ? -errno : static_cast<int32_t>(n), 0});
  return true;
}

void SyscallQueue::TryNonblocking() {
  for (size_t i = 0; i < pending_.size();) {
    Request& r = pending_[i];
    if (r.nonblocking && !r.tried) {
      r.tried = true;
      if (Attempt(r, 0)) {
        pending_.erase(pending_.begin() + i);
        continue;
      }
    }
    ++i;
  }
}

absl::Status SyscallQueue::Submit() {
  if (!failed_.ok()) return failed_;
  TryNonblocking();
  return absl::OkStatus();
}

absl::Status SyscallQueue::Cancel(uint64_t user_data) {
  if (!failed_.ok()) return failed_;
  auto it = std::find_if(pending_.begin(), pending_.end(),
                         [&](const Request& r) { return r.user_data == user_data; });
  if (it != pending_.end()) {
    done_.push_back(io::Completion{user_data, -ECANCELED, 0});
    pending_.erase(it);
    done_.push_back(io::Completion{io::kCancelTag, 0, 0});
  } else {
    done_.push_back(io::Completion{io::kCancelTag, -ENOENT, 0});
  }
  return absl::OkStatus();
}

absl::Status SyscallQueue::CancelFd(int fd) {
  if (!failed_.ok()) return failed_;
  int cancelled = 0;
  for (size_t i = 0; i < pending_.size();) {
    if (pending_[i].fd == fd) {
      done_.push_back(io::Completion{pending_[i].user_data, -ECANCELED, 0});
      pending_.erase(pending_.begin() + i);
      ++cancelled;
    } else {
      ++i;
    }
  }
  done_.push_back(io::Completion{io::kCancelTag, cancelled > 0 ? cancelled : -ENOENT, 0});
  return absl::OkStatus();
}

size_t SyscallQueue::Take(std::span<io::Completion> out) {
  size_t n = 0;
  while (n < out.size() && !done_.empty()) {
    out[n++] = done_.front();
    done_.pop_front();
  }
  return n;
}

absl::StatusOr<size_t> SyscallQueue::WaitBatch(absl::Duration timeout,
                                               std::span<io::Completion> out) {
  if (!failed_.ok()) return failed_;
  if (out.empty()) return 0;
  TryNonblocking();
  const absl::Time deadline = absl::Now() + std::max(timeout, absl::ZeroDuration());
  while (done_.empty()) {
    pollfds_.clear();
    polled_.clear();
    for (size_t i = 0; i < pending_.size(); ++i) {
      pollfds_.push_back(pollfd{pending_[i].fd, pending_[i].events, 0});
      polled_.push_back(i);
    }
    const absl::Duration left = std::max(deadline - absl::Now(), absl::ZeroDuration());
    const timespec ts = absl::ToTimespec(left);
    const int r = ::ppoll(pollfds_.data(), pollfds_.size(), &ts, nullptr);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      failed_ = ErrnoStatus(absl::StrCat("ppoll(", pollfds_.size(), " fds)"), errno);
      return failed_;
    }
    if (r == 0) {
      if (absl::Now() >= deadline) return 0;
      continue;
    }
    // Back to front, so erasing keeps the earlier indices valid.
    for (size_t k = pollfds_.size(); k-- > 0;) {
      const short revents = pollfds_[k].revents;
      if (revents == 0) continue;
      const size_t i = polled_[k];
      if (revents & POLLNVAL) {
        done_.push_back(io::Completion{pending_[i].user_data, -EBADF, 0});
        pending_.erase(pending_.begin() + i);
        continue;
      }
      if (Attempt(pending_[i], revents)) pending_.erase(pending_.begin() + i);
    }
    // Ready fds whose calls all said "not yet" must not hold the caller past its deadline.
    if (done_.empty() && absl::Now() >= deadline) return 0;
  }
  return Take(out);
}

}  // namespace migmover::syscalls
