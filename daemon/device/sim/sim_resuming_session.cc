#include "daemon/device/sim/sim_resuming_session.h"

#include <pthread.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "absl/time/clock.h"
#include "transport/base/errno_status.h"
#include "transport/base/status_macros.h"

namespace migmover::sim {

absl::StatusOr<std::unique_ptr<SimResumingSession>> SimResumingSession::Start(
    SimDeviceModel* model, UniqueFd* user_fd) {
  std::unique_ptr<SimResumingSession> s(new SimResumingSession(model));
  {
    absl::MutexLock l(&s->mu_);
    s->verifier_ = std::make_unique<StreamVerifier>(model->spec().state_size);
  }
  ASSIGN_OR_RETURN(PipeFds pipe, MakePipe());
  if (::fcntl(pipe.read.get(), F_SETFL, O_NONBLOCK) != 0) {
    return ErrnoStatus("fcntl(sim resuming pipe, F_SETFL, O_NONBLOCK)", errno);
  }
  if (model->spec().short_io) {
    ::fcntl(pipe.write.get(), F_SETPIPE_SZ, 4096);
    if (::fcntl(pipe.write.get(), F_SETFL, O_NONBLOCK) != 0) {
      return ErrnoStatus("fcntl(sim resuming pipe write end, F_SETFL, O_NONBLOCK)", errno);
    }
  } else if (model->spec().resume_stall_ms != 0) {
    // A stalled device takes (almost) nothing meanwhile: userspace's write blocks, as a
    // driver's does while it loads, instead of filling a large pipe. One slot: a pipe's
    // capacity counts buffers, not bytes, and a splice moves whole ones (a TCP segment each, up
    // to 64 KiB on loopback), so even 16 slots could take a megabyte during the stall.
    ::fcntl(pipe.write.get(), F_SETPIPE_SZ, 4096);
  } else {
    ::fcntl(pipe.write.get(), F_SETPIPE_SZ, 1 << 20);
  }
  struct stat st;
  if (::fstat(pipe.read.get(), &st) != 0) return ErrnoStatus("fstat(sim resuming pipe)", errno);
  s->pipe_dev_ = st.st_dev;
  s->pipe_ino_ = st.st_ino;
  s->cancel_fd_.Reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!s->cancel_fd_.valid()) return ErrnoStatus("eventfd(sim resuming session)", errno);
  s->read_fd_ = std::move(pipe.read);
  s->buf_.resize(1 << 20);
  *user_fd = std::move(pipe.write);
  s->thread_ = std::thread([p = s.get()] { p->Run(); });
  return s;
}

SimResumingSession::~SimResumingSession() {
  stop_ = true;
  uint64_t one = 1;
  (void)!::write(cancel_fd_.get(), &one, sizeof(one));
  if (thread_.joinable()) thread_.join();
}

bool SimResumingSession::Owns(int fd) const {
  struct stat st;
  return ::fstat(fd, &st) == 0 && st.st_dev == pipe_dev_ && st.st_ino == pipe_ino_;
}

uint64_t SimResumingSession::bytes_consumed() const {
  absl::MutexLock l(&mu_);
  return verifier_->bytes_consumed();
}

bool SimResumingSession::Drain() {
  while (true) {
    ssize_t n = ::read(read_fd_.get(), buf_.data(), buf_.size());
    if (n > 0) {
      absl::MutexLock l(&mu_);
      if (!verifier_->Consume(std::span<const uint8_t>(buf_.data(), n)).ok()) {
        // A real driver refuses the write that completes a bad record; closing our end makes
        // userspace's next write fail with EPIPE.
        read_fd_.Reset();
        return false;
      }
      const SimDeviceSpec& spec = model_->spec();
      if (!stalled_ && spec.resume_stall_ms != 0 &&
          verifier_->bytes_consumed() >= spec.resume_stall_at) {
        stalled_ = true;
        stall_until_ = absl::Now() + absl::Milliseconds(spec.resume_stall_ms);
        return true;
      }
      continue;
    }
    if (n == 0) {
      absl::MutexLock l(&mu_);
      eof_ = true;  // Userspace closed the data fd (QEMU does, before RESUMING -> STOP).
      return false;
    }
    if (errno == EINTR) continue;
    return errno == EAGAIN;
  }
}

void SimResumingSession::Run() {
  pthread_setname_np(pthread_self(), "mm-sim-resume");
  while (!stop_) {
    if (stalled_ && absl::Now() < stall_until_) {
      // The device takes nothing meanwhile: the pipe fills and userspace's writes wait.
      pollfd cancel{cancel_fd_.get(), POLLIN, 0};
      ::poll(&cancel, 1, 100);
      continue;
    }
    if (!Drain()) return;
    pollfd fds[2] = {{read_fd_.get(), POLLIN, 0}, {cancel_fd_.get(), POLLIN, 0}};
    ::poll(fds, 2, 100);
  }
}

absl::Status SimResumingSession::Commit() {
  stop_ = true;
  uint64_t one = 1;
  (void)!::write(cancel_fd_.get(), &one, sizeof(one));
  if (thread_.joinable()) thread_.join();
  stalled_ = true;  // A stall never cuts the commit's own drain short.
  // Every write userspace made returned before it asked for RESUMING -> STOP, so what is still
  // in the pipe is the rest of the stream.
  if (read_fd_.valid()) Drain();
  absl::MutexLock l(&mu_);
  RETURN_IF_ERROR(verifier_->Finish());
  model_->Load(verifier_->seed(), verifier_->generations());
  return absl::OkStatus();
}

}  // namespace migmover::sim
