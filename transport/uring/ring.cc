#include "transport/uring/ring.h"

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "transport/base/errno_status.h"

#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#include <unistd.h>

#include <cstdint>
#endif

namespace migmover::uring {
namespace {
// Transient refusals of io_uring_enter that a retry may clear: not the ring's failure.
bool Transient(int err) { return err == EINTR || err == EAGAIN; }
// A submit that keeps getting EAGAIN (the kernel could not allocate) gives up after this many.
constexpr int kMaxTransientRetries = 1000;

// ThreadSanitizer only: liburing maps and unmaps a ring's memory with raw syscalls, which TSan
// does not see, so a new ring the kernel maps where a destroyed one was looks like the old ring's
// memory written by another thread with nothing ordering the two. A ring's teardown releases on
// every page of its mappings and a new ring's set-up acquires on every page of its own: the order
// that munmap and mmap would have given TSan.
void TsanRingPages([[maybe_unused]] const io_uring& r, [[maybe_unused]] bool teardown) {
#if defined(__SANITIZE_THREAD__)
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  auto each = [&](const void* p, size_t len) {
    if (p == nullptr) return;
    const uintptr_t end = reinterpret_cast<uintptr_t>(p) + len;
    for (uintptr_t a = reinterpret_cast<uintptr_t>(p) & ~(page - 1); a < end; a += page) {
      if (teardown) {
        __tsan_release(reinterpret_cast<void*>(a));
      } else {
        __tsan_acquire(reinterpret_cast<void*>(a));
      }
    }
  };
  each(r.sq.ring_ptr, r.sq.ring_sz);
  each(r.sq.sqes, r.sq.ring_entries * sizeof(io_uring_sqe));
  each(r.cq.ring_ptr, r.cq.ring_sz);
#endif
}

// The kernel's completion flags as IoQueue's.
uint32_t Flags(uint32_t cqe_flags) {
  return ((cqe_flags & IORING_CQE_F_MORE) ? io::kCompletionMore : 0) |
         ((cqe_flags & IORING_CQE_F_NOTIF) ? io::kCompletionNotif : 0);
}
}  // namespace

absl::StatusOr<std::unique_ptr<Ring>> Ring::Create(unsigned entries) {
  std::unique_ptr<Ring> ring(new Ring());
  // Plain flags: SINGLE_ISSUER|DEFER_TASKRUN measured no gain here (bench/README.md) and a
  // start-up probe stalled once under load with them; revisit with evidence.
  int r = io_uring_queue_init(entries, &ring->ring_, 0);
  if (r < 0) return ErrnoStatus(absl::StrCat("io_uring_queue_init(", entries, ")"), -r);
  ring->initialized_ = true;
  TsanRingPages(ring->ring_, /*teardown=*/false);
  return ring;
}

Ring::~Ring() {
  if (!initialized_) return;
  TsanRingPages(ring_, /*teardown=*/true);
  io_uring_queue_exit(&ring_);
}

const absl::Status& Ring::Fail(const char* call, int err) {
  if (failed_.ok()) failed_ = ErrnoStatus(call, err);
  return failed_;
}

void Ring::DrainToBacklog() {
  io_uring_cqe* cqe;
  while (io_uring_peek_cqe(&ring_, &cqe) == 0 && cqe != nullptr) {
    backlog_.push_back(Completion{cqe->user_data, cqe->res, Flags(cqe->flags)});
    io_uring_cqe_seen(&ring_, cqe);
  }
}

io_uring_sqe* Ring::Sqe() {
  int transient = 0;
  while (failed_.ok()) {
    if (io_uring_sqe* sqe = io_uring_get_sqe(&ring_)) return sqe;
    // Full: submit to make room.
    const int r = io_uring_submit(&ring_);
    if (r >= 0) continue;
    if (r == -EBUSY) {
      DrainToBacklog();  // The completion queue is full: take its entries aside.
    } else if (!Transient(-r) || ++transient > kMaxTransientRetries) {
      Fail("io_uring_submit (submission queue full)", -r);
    }
  }
  std::memset(&scratch_, 0, sizeof(scratch_));
  return &scratch_;
}

absl::Status Ring::Submit() {
  if (!failed_.ok()) return failed_;
  int r = io_uring_submit(&ring_);
  if (r == -EBUSY) {
    DrainToBacklog();
    r = io_uring_submit(&ring_);
  }
  if (r >= 0 || r == -EBUSY || Transient(-r)) return absl::OkStatus();  // Queued for next time.
  return Fail("io_uring_submit", -r);
}

absl::StatusOr<bool> Ring::WaitOne(absl::Duration timeout, Completion* out) {
  if (!failed_.ok()) return failed_;
  if (!backlog_.empty()) {
    // Taken aside under backpressure: hand those out first, and submit what waits meanwhile.
    *out = backlog_.front();
    backlog_.pop_front();
    if (absl::Status s = Submit(); !s.ok()) return s;
    return true;
  }
  io_uring_cqe* cqe = nullptr;
  __kernel_timespec ts =
      absl::ToTimespec(timeout).tv_sec >= 0
          ? __kernel_timespec{absl::ToTimespec(timeout).tv_sec, absl::ToTimespec(timeout).tv_nsec}
          : __kernel_timespec{0, 0};
  int transient = 0;
  while (true) {
    int r = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
    if (r == -EBUSY) {
      DrainToBacklog();
      if (backlog_.empty()) {
        if (++transient > kMaxTransientRetries) return Fail("io_uring_submit_and_wait_timeout", EBUSY);
        continue;
      }
      *out = backlog_.front();
      backlog_.pop_front();
      return true;
    }
    if (r == -ETIME) return false;
    if (r < 0 && Transient(-r) && ++transient <= kMaxTransientRetries) continue;
    if (r < 0) return Fail("io_uring_submit_and_wait_timeout", -r);
    if (cqe == nullptr) return false;
    out->user_data = cqe->user_data;
    out->res = cqe->res;
    out->flags = Flags(cqe->flags);
    io_uring_cqe_seen(&ring_, cqe);
    return true;
  }
}

void Ring::Read(int fd, void* buf, uint32_t len, int buffer_index, uint64_t user_data) {
  io_uring_sqe* sqe = Sqe();
  // Offset -1: the fd's own position, as read(2).
  if (buffer_index >= 0) {
    io_uring_prep_read_fixed(sqe, fd, buf, len, -1, buffer_index);
  } else {
    io_uring_prep_read(sqe, fd, buf, len, -1);
  }
  io_uring_sqe_set_data64(sqe, user_data);
}

void Ring::Write(int fd, const void* buf, uint32_t len, int buffer_index, uint64_t user_data) {
  io_uring_sqe* sqe = Sqe();
  if (buffer_index >= 0) {
    io_uring_prep_write_fixed(sqe, fd, buf, len, -1, buffer_index);
  } else {
    io_uring_prep_write(sqe, fd, buf, len, -1);
  }
  io_uring_sqe_set_data64(sqe, user_data);
}

void Ring::Send(int fd, const void* buf, uint32_t len, int flags, uint64_t user_data) {
  io_uring_sqe* sqe = Sqe();
  io_uring_prep_send(sqe, fd, buf, len, flags);
  io_uring_sqe_set_data64(sqe, user_data);
}

void Ring::Recv(int fd, void* buf, uint32_t len, int flags, uint64_t user_data) {
  io_uring_sqe* sqe = Sqe();
  io_uring_prep_recv(sqe, fd, buf, len, flags);
  io_uring_sqe_set_data64(sqe, user_data);
}

void Ring::SendZeroCopy(int fd, const void* buf, uint32_t len, int flags, int buffer_index,
                        uint64_t user_data) {
  io_uring_sqe* sqe = Sqe();
  if (buffer_index >= 0) {
    io_uring_prep_send_zc_fixed(sqe, fd, buf, len, flags, 0, buffer_index);
  } else {
    io_uring_prep_send_zc(sqe, fd, buf, len, flags, 0);
  }
  io_uring_sqe_set_data64(sqe, user_data);
}

void Ring::Poll(int fd, short events, uint64_t user_data) {
  io_uring_sqe* sqe = Sqe();
  io_uring_prep_poll_add(sqe, fd, static_cast<unsigned>(events));
  io_uring_sqe_set_data64(sqe, user_data);
}

absl::Status Ring::Cancel(uint64_t user_data) {
  io_uring_sqe* sqe = Sqe();
  io_uring_prep_cancel64(sqe, user_data, 0);
  io_uring_sqe_set_data64(sqe, io::kCancelTag);
  return Submit();
}

absl::Status Ring::CancelFd(int fd) {
  io_uring_sqe* sqe = Sqe();
  io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
  io_uring_sqe_set_data64(sqe, io::kCancelTag);
  return Submit();
}

absl::StatusOr<size_t> Ring::WaitBatch(absl::Duration timeout, std::span<Completion> out) {
  if (out.empty()) return 0;
  absl::StatusOr<bool> got = WaitOne(timeout, &out[0]);
  if (!got.ok()) return got.status();
  if (!*got) return 0;
  size_t n = 1;
  while (n < out.size() && !backlog_.empty()) {
    out[n++] = backlog_.front();
    backlog_.pop_front();
  }
  io_uring_cqe* cqe;
  while (n < out.size() && io_uring_peek_cqe(&ring_, &cqe) == 0 && cqe != nullptr) {
    out[n++] = Completion{cqe->user_data, cqe->res, Flags(cqe->flags)};
    io_uring_cqe_seen(&ring_, cqe);
  }
  return n;
}

absl::Status Ring::RegisterBuffers(std::span<const iovec> iovecs) {
  if (buffers_registered_) {
    io_uring_unregister_buffers(&ring_);
    buffers_registered_ = false;
  }
  int r = io_uring_register_buffers(&ring_, iovecs.data(), iovecs.size());
  if (r < 0) {
    return ErrnoStatus(absl::StrCat("io_uring_register_buffers(", iovecs.size(), " buffers)"), -r);
  }
  buffers_registered_ = true;
  return absl::OkStatus();
}

}  // namespace migmover::uring
