#include "daemon/device/sim/sim_saving_session.h"

#include <pthread.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "daemon/device/sim/sim_stream.h"
#include "transport/base/errno_status.h"
#include "transport/base/status_macros.h"

namespace migmover::sim {

absl::StatusOr<std::unique_ptr<SimSavingSession>> SimSavingSession::Start(
    SimDeviceModel* model, const SimContentImage* image, bool stop_copy, UniqueFd* user_fd) {
  std::unique_ptr<SimSavingSession> s(new SimSavingSession(model, image));
  const SimDeviceSpec& spec = model->spec();
  if (spec.save_fd == SimDeviceSpec::SaveFd::kFile) {
    RETURN_IF_ERROR(s->OpenFile(user_fd));
  } else {
    RETURN_IF_ERROR(s->OpenPipe(user_fd));
  }
  s->cancel_fd_.Reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!s->cancel_fd_.valid()) return ErrnoStatus("eventfd(sim saving session)", errno);
  s->stop_copy_ = stop_copy;
  s->initial_stream_bytes_ =
      sizeof(RecordHeader) + sizeof(BeginPayload) + model->initial_chunks() * model->record_bytes();
  model->BeginSaving();
  if (stop_copy) model->EnterStopCopy();
  s->thread_ = std::thread([p = s.get()] { p->Run(); });
  if (stop_copy) {
    s->AwaitProducedIfFile();
  } else if (s->file_mode_) {
    // mtty has its initial data readable when the arc into PRE_COPY returns; so does this
    // file: at least the BEGIN record and the first chunk's record.
    const uint64_t first = sizeof(RecordHeader) + sizeof(BeginPayload) +
                           std::min<uint64_t>(s->initial_stream_bytes_ -
                                                  sizeof(RecordHeader) - sizeof(BeginPayload),
                                              model->record_bytes());
    absl::MutexLock l(&s->io_mu_);
    auto ready = [p = s.get(), first] { return p->written_.load() >= first || p->produced_.load(); };
    s->io_mu_.Await(absl::Condition(&ready));
  }
  return s;
}

absl::Status SimSavingSession::OpenFile(UniqueFd* user_fd) {
  file_mode_ = true;
  UniqueFd mem(::memfd_create("migmover-sim-saving", MFD_CLOEXEC));
  if (!mem) return ErrnoStatus("memfd_create(sim saving file)", errno);
  // The user's fd is its own open file description, so it has its own offset: a read at the
  // end of what was produced so far returns 0, and later data is read from where it stopped.
  UniqueFd user(::open(absl::StrCat("/proc/self/fd/", mem.get()).c_str(), O_RDONLY | O_CLOEXEC));
  if (!user) return ErrnoStatus("open(/proc/self/fd/<sim memfd>, O_RDONLY)", errno);
  ASSIGN_OR_RETURN(reader_probe_, user.Dup());  // Shares the user's offset.
  struct stat st;
  if (::fstat(mem.get(), &st) != 0) return ErrnoStatus("fstat(sim saving file)", errno);
  pipe_dev_ = st.st_dev;
  pipe_ino_ = st.st_ino;
  write_fd_ = std::move(mem);
  *user_fd = std::move(user);
  return absl::OkStatus();
}

absl::Status SimSavingSession::OpenPipe(UniqueFd* user_fd) {
  const SimDeviceSpec& spec = model_->spec();
  ASSIGN_OR_RETURN(PipeFds pipe, MakePipe());
  // The producer never blocks in write(): it polls, so that cancellation can always wake it.
  if (::fcntl(pipe.write.get(), F_SETFL, O_NONBLOCK) != 0) {
    return ErrnoStatus("fcntl(sim saving pipe, F_SETFL, O_NONBLOCK)", errno);
  }
  if (spec.short_io) {
    ::fcntl(pipe.write.get(), F_SETPIPE_SZ, 4096);
    if (::fcntl(pipe.read.get(), F_SETFL, O_NONBLOCK) != 0) {
      return ErrnoStatus("fcntl(sim saving pipe read end, F_SETFL, O_NONBLOCK)", errno);
    }
  } else {
    // As large as an unprivileged pipe may be (1 MiB here), so the producer runs ahead.
    ::fcntl(pipe.write.get(), F_SETPIPE_SZ, 1 << 20);
  }
  struct stat st;
  if (::fstat(pipe.read.get(), &st) != 0) return ErrnoStatus("fstat(sim saving pipe)", errno);
  pipe_dev_ = st.st_dev;
  pipe_ino_ = st.st_ino;
  write_fd_ = std::move(pipe.write);
  *user_fd = std::move(pipe.read);
  return absl::OkStatus();
}

uint64_t SimSavingSession::QueuedLocked() const {
  if (file_mode_) {
    off_t pos = ::lseek(reader_probe_.get(), 0, SEEK_CUR);
    return pos < 0 ? 0 : written_.load() - std::min<uint64_t>(written_.load(), pos);
  }
  int queued = 0;
  if (::ioctl(write_fd_.get(), FIONREAD, &queued) != 0) queued = 0;
  return static_cast<uint64_t>(queued);
}

void SimSavingSession::AwaitProducedIfFile() {
  if (!file_mode_) return;
  // mtty produces its STOP_COPY data inside the arc: the SET returns with all of it readable.
  absl::MutexLock l(&io_mu_);
  io_mu_.Await(absl::Condition(
      +[](std::atomic<bool>* done) { return done->load(); }, &produced_));
}

SimSavingSession::~SimSavingSession() {
  cancelled_ = true;
  uint64_t one = 1;
  (void)!::write(cancel_fd_.get(), &one, sizeof(one));
  if (thread_.joinable()) thread_.join();
}

void SimSavingSession::EnterStopCopy() {
  model_->EnterStopCopy();
  stop_copy_ = true;
  uint64_t one = 1;
  (void)!::write(cancel_fd_.get(), &one, sizeof(one));  // Wake a producer waiting for dirt.
  AwaitProducedIfFile();
}

bool SimSavingSession::Owns(int fd) const {
  struct stat st;
  return ::fstat(fd, &st) == 0 && st.st_dev == pipe_dev_ && st.st_ino == pipe_ino_;
}

PrecopyInfo SimSavingSession::Precopy() const {
  uint64_t queued;
  uint64_t written;
  {
    // With io_mu_ held no write is between its syscall and its count, so written - queued is
    // exactly what the reader has consumed.
    absl::MutexLock l(&io_mu_);
    queued = QueuedLocked();
    written = written_.load();
  }
  const uint64_t read = written - std::min<uint64_t>(written, queued);
  uint64_t emitted = 0, unpicked = 0;
  model_->Progress(&emitted, &unpicked);
  const uint64_t pending = (emitted - std::min(emitted, read)) + unpicked;
  PrecopyInfo info;
  info.initial_bytes = read < initial_stream_bytes_ ? initial_stream_bytes_ - read : 0;
  info.initial_bytes = std::min(info.initial_bytes, pending);
  info.dirty_bytes = pending - info.initial_bytes;
  return info;
}

bool SimSavingSession::PushAll(size_t n, absl::FunctionRef<ssize_t(size_t done)> step) {
  size_t done = 0;
  while (done < n) {
    if (cancelled_) return false;
    const ssize_t w = step(done);
    if (w > 0) {
      done += w;
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno == EAGAIN) {
      AwaitRoom();
      continue;
    }
    // EPIPE: userspace closed the data fd, the session is over for us (a splice's 0 would mean
    // a short image).
    return false;
  }
  return true;
}

bool SimSavingSession::WriteAll(const uint8_t* data, size_t n) {
  const SimDeviceSpec& spec = model_->spec();
  return PushAll(n, [&](size_t done) -> ssize_t {
    const size_t left = n - done;
    size_t piece = spec.short_io ? std::min<size_t>(left, 1 + (written_.load() * 7919) % 4096)
                                 : left;
    ssize_t w;
    if (file_mode_) {
      int err;
      {
        absl::MutexLock l(&io_mu_);
        const uint64_t queued = QueuedLocked();
        if (!stop_copy_.load() && queued > kFileWindow) {
          w = -1;
          err = EAGAIN;  // Stay at most a window ahead of the reader while precopying.
        } else {
          w = ::pwrite(write_fd_.get(), data + done, piece, written_.load());
          err = errno;
          if (w > 0) written_ += w;
          // Release what the reader has consumed, in whole pages.
          const uint64_t consumed = (written_.load() - QueuedLocked()) & ~uint64_t{4095};
          if (consumed > punched_) {
            ::fallocate(write_fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, punched_,
                        consumed - punched_);
            punched_ = consumed;
          }
        }
      }
      errno = err;  // Kept across the calls above and the unlock (a futex call).
      return w;
    }
    int err;
    {
      absl::MutexLock l(&io_mu_);  // The fd is non-blocking: this never waits on the reader.
      w = ::write(write_fd_.get(), data + done, piece);
      err = errno;
      if (w > 0) written_ += w;
    }
    errno = err;  // The unlock may make a futex call.
    return w;
  });
}

bool SimSavingSession::SpliceAll(uint64_t offset, size_t n) {
  return PushAll(n, [&](size_t done) -> ssize_t {
    ssize_t w;
    int err;
    {
      absl::MutexLock l(&io_mu_);
      loff_t off = static_cast<loff_t>(offset + done);
      w = ::splice(image_->fd(), &off, write_fd_.get(), nullptr, n - done, SPLICE_F_NONBLOCK);
      err = errno;
      if (w > 0) written_ += w;
    }
    errno = err;  // The unlock may make a futex call.
    return w;
  });
}

void SimSavingSession::AwaitRoom() {
  // A file is always writable: there, wait for the reader by time instead.
  pollfd fds[2] = {{write_fd_.get(), static_cast<short>(file_mode_ ? 0 : POLLOUT), 0},
                   {cancel_fd_.get(), POLLIN, 0}};
  ::poll(fds, 2, file_mode_ ? 1 : 100);
  if (fds[1].revents & POLLIN) {
    uint64_t v;
    (void)!::read(cancel_fd_.get(), &v, sizeof(v));
  }
}

void SimSavingSession::MarkProduced() {
  absl::MutexLock l(&io_mu_);
  produced_ = true;
}

void SimSavingSession::Run() {
  pthread_setname_np(pthread_self(), "mm-sim-save");
  // However the producer ends, nobody may wait for it any longer.
  struct Done {
    SimSavingSession* s;
    ~Done() { s->MarkProduced(); }
  } done{this};
  const SimDeviceSpec& spec = model_->spec();
  std::vector<uint8_t> buf(sizeof(RecordHeader) + std::max<size_t>(spec.chunk_size, 64));
  StreamDigest digest;
  uint64_t stream_bytes = 0;  // Before END (with image content, the digest covers fewer).
  uint64_t seq = 0;
  auto emit = [&](RecordType type, uint64_t chunk, uint32_t gen, uint32_t len) {
    RecordHeader h{kRecordMagic, static_cast<uint16_t>(type), kRecordVersion, len, gen, seq++,
                   chunk};
    std::memcpy(buf.data(), &h, sizeof(h));
    const size_t total = sizeof(h) + len;
    if (type != RecordType::kEnd) {
      digest.Update(buf.data(), total);
      stream_bytes += total;
    }
    const uint64_t at = written_.load();
    if (spec.corrupt_at >= at && spec.corrupt_at < at + total) buf[spec.corrupt_at - at] ^= 0x5a;
    return WriteAll(buf.data(), total);
  };
  // Image content: the header is written, the payload spliced from the image's pages.
  auto emit_image = [&](uint64_t chunk, uint32_t gen, uint32_t len) {
    RecordHeader h{kRecordMagic, static_cast<uint16_t>(RecordType::kData), kRecordVersion, len,
                   gen, seq++, chunk};
    const uint64_t slot = image_->SlotFor(chunk, gen);
    const uint64_t payload_digest = image_->PayloadDigest(slot, len);
    digest.Update(&h, sizeof(h));
    digest.Update(&payload_digest, sizeof(payload_digest));
    stream_bytes += sizeof(h) + len;
    return WriteAll(reinterpret_cast<const uint8_t*>(&h), sizeof(h)) &&
           SpliceAll(image_->SlotOffset(slot), len);
  };

  BeginPayload b{model_->seed(), spec.state_size, spec.chunk_size,
                 image_ != nullptr ? kBeginImageContent : 0};
  std::memcpy(buf.data() + sizeof(RecordHeader), &b, sizeof(b));
  if (!emit(RecordType::kBegin, 0, 0, sizeof(b))) return;
  while (!cancelled_) {
    NextRecord next = model_->Next();
    if (next.kind == NextRecord::kWait) {
      pollfd fd = {cancel_fd_.get(), POLLIN, 0};
      ::poll(&fd, 1, 2);
      if (fd.revents & POLLIN) {
        uint64_t v;
        (void)!::read(cancel_fd_.get(), &v, sizeof(v));
      }
      continue;
    }
    if (next.kind == NextRecord::kEnd) {
      EndPayload e{seq, stream_bytes, digest.Value(), model_->state_digest()};
      final_digest_ = e.stream_digest;
      std::memcpy(buf.data() + sizeof(RecordHeader), &e, sizeof(e));
      if (emit(RecordType::kEnd, 0, 0, sizeof(e)) && !file_mode_) {
        absl::MutexLock l(&io_mu_);
        write_fd_.Reset();  // EOF for the reader.
      }
      MarkProduced();
      return;
    }
    uint32_t len = ChunkLength(spec.state_size, spec.chunk_size, next.chunk);
    if (image_ != nullptr) {
      if (!emit_image(next.chunk, next.generation, len)) return;
      continue;
    }
    FillChunk(model_->seed(), next.chunk, next.generation,
              std::span<uint8_t>(buf.data() + sizeof(RecordHeader), len));
    if (!emit(RecordType::kData, next.chunk, next.generation, len)) return;
  }
}

}  // namespace migmover::sim
