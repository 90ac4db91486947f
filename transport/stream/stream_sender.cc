#include "transport/stream/stream_sender.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "transport/base/errno_status.h"
#include "transport/base/status_macros.h"
#include "transport/base/stream_digest.h"
#include "transport/net/socket.h"
#include "transport/peer/handshake.h"
#include "transport/io/io_queue_factory.h"
#include "transport/stream/pump_worker.h"
#include "transport/stream/splice_io.h"
#include "transport/stream/stream_errors.h"

namespace migmover::stream {
namespace {

using wire::FrameHeader;
using wire::FrameType;
using wire::Phase;

enum OpKind : uint8_t { kRead = 1, kPoll = 2, kSend = 3, kPeer = 5 };

constexpr absl::Duration kTick = absl::Milliseconds(100);
// The destination's frames on the control connection: HELLO_ACK (0), then its one verdict.
constexpr uint64_t kVerdictSeq = 1;

}  // namespace

StreamSender::StreamSender(io::IoQueue* ring, std::vector<UniqueFd> sockets, uint32_t device,
                           const StreamOptions& options)
    : ring_(ring),
      sockets_(std::move(sockets)),
      out_(device, sockets_.size()),
      device_(device),
      options_(options),
      digest_(new StreamDigest) {}

StreamSender::~StreamSender() = default;

absl::StatusOr<std::unique_ptr<StreamSender>> StreamSender::Create(io::IoQueue* ring,
                                                                   UniqueFd socket, uint32_t device,
                                                                   const StreamOptions& options) {
  std::vector<UniqueFd> sockets;
  sockets.push_back(std::move(socket));
  return Create(ring, std::move(sockets), device, options);
}

absl::StatusOr<std::unique_ptr<StreamSender>> StreamSender::Create(io::IoQueue* ring,
                                                                   std::vector<UniqueFd> sockets,
                                                                   uint32_t device,
                                                                   const StreamOptions& options) {
  if (sockets.empty() || sockets.size() > wire::kMaxStreamsPerDevice) {
    return absl::InvalidArgumentError(absl::StrCat("a device stream takes 1..",
                                                   wire::kMaxStreamsPerDevice, " connections, not ",
                                                   sockets.size()));
  }
  if (options.chunk_size == 0 || options.chunk_size > wire::kMaxDataLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk size ", options.chunk_size, " outside 1..", wire::kMaxDataLength));
  }
  if (options.buffers < 2) return absl::InvalidArgumentError("a stream needs at least 2 buffers");
  std::unique_ptr<StreamSender> s(new StreamSender(ring, std::move(sockets), device, options));
  for (const UniqueFd& fd : s->sockets_) {
    RETURN_IF_ERROR(net::TuneDataSocket(fd.get(), options.socket_buffer, options.tcp_congestion));
  }
  return s;
}

DataPath StreamSender::PlannedDataPath(int data_fd) const {
  return ResolveDataPath(options_.data_path, data_fd, options_.auto_spliceable);
}

std::string StreamSender::transport_name() const {
  return sockets_.size() > 1 ? absl::StrCat("tcp x ", sockets_.size()) : "tcp";
}

absl::Status StreamSender::SendControl(const std::string& frame) {
  return net::SendAll(control_fd(), frame, absl::Now() + options_.idle_timeout);
}

absl::Status StreamSender::Handshake(const peer::Hello& hello, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  for (size_t k = 0; k < sockets_.size(); ++k) {
    RETURN_IF_ERROR(net::SendAll(sockets_[k].get(), out_.Hello(k, hello), deadline));
  }
  for (const UniqueFd& fd : sockets_) RETURN_IF_ERROR(peer::AwaitHelloAck(fd.get(), deadline));
  return absl::OkStatus();
}

absl::Status StreamSender::PeerVerdict() {
  pollfd p{control_fd(), POLLIN, 0};
  if (::poll(&p, 1, 0) <= 0 || !(p.revents & (POLLIN | POLLHUP | POLLERR))) {
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(peer::ControlFrame f,
                   peer::ReadControlFrame(control_fd(), absl::Now() + absl::Seconds(1)));
  absl::Status verdict = peer::VerdictOf(f, "destination gave up", kVerdictSeq);
  // Even a COMMIT(0) is wrong mid-stream: nothing was committed yet.
  return verdict.ok() ? absl::DataLossError("destination committed before END_STREAM") : verdict;
}

absl::StatusOr<PumpResult> StreamSender::Pump(int data_fd, Phase phase, uint64_t max_bytes,
                                              const std::atomic<bool>& stop,
                                              const std::atomic<bool>& cancel) {
  if (PlannedDataPath(data_fd) == DataPath::kSplice) {
    bool unsupported = false;
    auto r = PumpSplice(data_fd, phase, max_bytes, stop, cancel, &unsupported);
    if (!unsupported) return r;
    if (options_.data_path == DataPath::kSplice) {
      return absl::FailedPreconditionError(absl::StrCat("--data_path=splice: data fd ", data_fd,
                                                        " does not support splice (EINVAL)"));
    }
  }
  path_used_ = DataPath::kCopy;
  return PumpCopy(data_fd, phase, max_bytes, stop, cancel);
}

// The copy path of one Pump call: reads the data fd into registered buffers and sends each as a
// DATA frame on a free connection, with one read in flight (a data fd is a stream) and one frame
// in flight per connection (each connection's frames stay in stream order).
class StreamSender::CopyJob final : public PumpJob {
 public:
  CopyJob(StreamSender* s, io::IoQueue* ring, BufferPool* pool, std::span<const uint32_t> slots,
          uint32_t job, int data_fd, Phase phase, uint64_t max_bytes, const std::atomic<bool>& stop,
          const std::atomic<bool>& cancel)
      : s_(s),
        ring_(ring),
        pool_(pool),
        job_(job),
        data_fd_(data_fd),
        phase_(phase),
        stop_(stop),
        cancel_(cancel),
        cap_(static_cast<uint32_t>(std::min<size_t>(slots.size(), 64))),
        nsock_(s->sockets_.size()),
        remaining_(max_bytes),
        read_offset_(s->offset_) {
    for (uint32_t i = 0; i < cap_; ++i) {
      pool_index_[i] = slots[i];
      free_list_[free_count_++] = i;
    }
    for (size_t k = 0; k < nsock_; ++k) sending_[k] = -1;
  }

  absl::StatusOr<PumpResult> Result() const {
    if (!error_.ok()) return error_;
    return result_;
  }

  bool Done() const override { return aborted_ || (Drained() && !peer_poll_inflight_); }

  void Abort(absl::Status why) override {
    if (error_.ok()) error_ = std::move(why);
    ended_ = true;
    aborted_ = true;
  }

  absl::Time WakeBy() const override {
    return send_not_before_ > absl::Now() ? send_not_before_ : absl::InfiniteFuture();
  }

  void Issue() override {
    // The destination only speaks mid-stream to give up. The ring watches its connection, so
    // noticing costs nothing per frame.
    if (!ended_ && !peer_poll_inflight_) {
      ring_->Poll(s_->control_fd(), POLLIN, JobTag(kPeer, job_, 0));
      peer_poll_inflight_ = true;
      peer_cancel_sent_ = false;
    }
    if (!ended_ && !read_inflight_ && !poll_inflight_) {
      if (cancel_.load()) {
        Fail(absl::CancelledError("stream cancelled"));
      } else if (remaining_ == 0) {
        ended_ = true;
        result_.end = PumpResult::End::kBudget;
      } else if (stop_.load()) {
        ended_ = true;
        result_.end = PumpResult::End::kStopped;
      } else if (free_count_ > 0) {
        const uint32_t slot = free_list_[--free_count_];
        const uint32_t len =
            static_cast<uint32_t>(std::min<uint64_t>(s_->options_.chunk_size, remaining_));
        read_tag_ = JobTag(kRead, job_, slot);
        ring_->Read(data_fd_, pool_->payload(pool_index_[slot]), len,
                    static_cast<int>(pool_index_[slot]), read_tag_);
        read_inflight_ = true;
        read_cancel_sent_ = false;
      }
    }
    // Hand ready frames, in stream order, to free connections.
    while (ready_count_ > 0 && error_.ok() && sends_inflight_ < nsock_) {
      const uint32_t slot = ready_[ready_head_];
      Slot& sl = slots_[slot];
      if (s_->options_.limiter && !head_reserved_) {
        send_not_before_ =
            absl::Now() + s_->options_.limiter->Reserve(wire::kFrameHeaderSize + sl.len);
        head_reserved_ = true;
      }
      if (absl::Now() < send_not_before_) break;
      size_t k = s_->next_socket_;
      while (sending_[k] >= 0) k = (k + 1) % nsock_;
      s_->next_socket_ = (k + 1) % nsock_;
      head_reserved_ = false;
      ready_head_ = (ready_head_ + 1) % cap_;
      --ready_count_;
      sl.sock = static_cast<uint32_t>(k);
      uint8_t* frame = pool_->base(pool_index_[slot]);
      peer::EncodeHeader(s_->out_.Data(k, phase_, sl.len, sl.offset),
                         std::span<uint8_t, wire::kFrameHeaderSize>(frame, wire::kFrameHeaderSize));
      SubmitSend(slot, s_->sockets_[k].get(), 0, wire::kFrameHeaderSize + sl.len);
      sending_[k] = static_cast<int>(slot);
      ++sends_inflight_;
      // The frame leaves first and the digest reads it meanwhile (the kernel only reads the
      // buffer too): the digest is off the path from the data fd to the peer.
      Check(ring_->Submit());
      s_->digest_->Update(pool_->payload(pool_index_[slot]), sl.len);
    }
    if (Drained() && peer_poll_inflight_ && !peer_cancel_sent_) {
      Check(ring_->Cancel(JobTag(kPeer, job_, 0)));
      peer_cancel_sent_ = true;
    }
  }

  void OnTick() override {
    if (cancel_.load() && !ended_) Fail(absl::CancelledError("stream cancelled"));
    // Switchover must not wait on a PRE_COPY read that the driver cannot satisfy (a precopy
    // estimate that overshot): withdraw it. Only the read: a send must never be cut.
    if (stop_.load() && phase_ == Phase::kPreCopy && read_inflight_ && !read_cancel_sent_) {
      Check(ring_->Cancel(read_tag_));
      read_cancel_sent_ = true;
    }
    if (send_not_before_ > last_progress_) {
      last_progress_ = std::min(absl::Now(), send_not_before_);
    }
    if (absl::Now() - last_progress_ > s_->options_.idle_timeout && error_.ok() && !ended_) {
      Fail(NoProgressError(s_->device_, s_->options_.idle_timeout,
                           read_inflight_ ? "waiting on the data fd" : "waiting on the peer"));
    }
  }

  void OnCompletion(const io::Completion& c) override {
    const uint32_t slot = SlotOf(c.user_data);
    switch (io::TagKind(c.user_data)) {
      case kRead:
        OnRead(slot, c.res);
        break;
      case kPoll:
        poll_inflight_ = false;
        break;
      case kSend:
        OnSend(slot, c);
        break;
      case kPeer:
        peer_poll_inflight_ = false;
        // Readable (or hung up) while frames still go out: read why, and stop.
        if (c.res > 0 && !ended_) {
          absl::Status v = s_->PeerVerdict();
          if (!v.ok()) Fail(v);
        }
        break;
    }
  }

 private:
  struct Slot {
    uint32_t len = 0;
    uint32_t sent = 0;
    uint64_t offset = 0;
    uint32_t sock = 0;  // The connection the frame goes out on, once assigned.
    // SEND_ZC: the kernel still reads the buffer until each send's notification arrives.
    uint32_t notifs = 0;
    bool sent_all = false;
  };

  void SubmitSend(uint32_t slot, int fd, uint32_t from, uint32_t len) {
    uint8_t* base = pool_->base(pool_index_[slot]);
    if (s_->options_.send_zc) {
      ring_->SendZeroCopy(fd, base + from, len, MSG_NOSIGNAL, static_cast<int>(pool_index_[slot]),
                          JobTag(kSend, job_, slot));
    } else {
      ring_->Send(fd, base + from, len, MSG_NOSIGNAL, JobTag(kSend, job_, slot));
    }
  }

  // A ring call that failed breaks the ring: the job aborts with it.
  void Check(absl::Status s) {
    if (!s.ok()) Abort(std::move(s));
  }

  // Ended, with no data-path request of this job in flight.
  bool Drained() const {
    return ended_ && !read_inflight_ && !poll_inflight_ && sends_inflight_ == 0 &&
           notifs_outstanding_ == 0 && (ready_count_ == 0 || !error_.ok());
  }

  void Fail(absl::Status st) {
    if (error_.ok()) error_ = std::move(st);
    ended_ = true;
    if (!cancel_sent_ && (read_inflight_ || poll_inflight_ || sends_inflight_ > 0 ||
                          notifs_outstanding_ > 0 || peer_poll_inflight_)) {
      // Only this job's requests: the ring may carry other streams.
      cancel_sent_ = true;
      Check(ring_->CancelFd(data_fd_));
      for (const UniqueFd& fd : s_->sockets_) Check(ring_->CancelFd(fd.get()));
    }
  }

  void OnRead(uint32_t slot, int32_t res) {
    read_inflight_ = false;
    if (res > 0) {
      last_progress_ = absl::Now();
      slots_[slot] = Slot{static_cast<uint32_t>(res), 0, read_offset_, 0, 0, false};
      read_offset_ += res;
      remaining_ -= res;
      result_.bytes += res;
      ready_[(ready_head_ + ready_count_++) % cap_] = slot;
      return;
    }
    free_list_[free_count_++] = slot;
    if (ended_) return;  // Cancelled read.
    if (res == -ECANCELED && read_cancel_sent_) {
      ended_ = true;
      result_.end = PumpResult::End::kStopped;
      return;
    }
    const bool precopy = phase_ == Phase::kPreCopy;
    if (res == 0 || (precopy && (res == -ENOMSG || res == -EAGAIN))) {
      ended_ = true;
      result_.end = precopy ? PumpResult::End::kDrained : PumpResult::End::kEof;
    } else if (res == -EAGAIN) {
      ring_->Poll(data_fd_, POLLIN, JobTag(kPoll, job_, 0));
      poll_inflight_ = true;
    } else if (res != -EINTR) {
      Fail(ErrnoStatus(absl::StrCat("read(data fd ", data_fd_, ", ", peer::PhaseName(phase_), ")"),
                       -res));
    }
  }

  void OnSend(uint32_t slot, const io::Completion& c) {
    Slot& sl = slots_[slot];
    if (c.flags & io::kCompletionNotif) {
      // SEND_ZC: the kernel is done with the buffer of one send of this frame.
      --sl.notifs;
      --notifs_outstanding_;
      if (sl.notifs == 0 && sl.sent_all) free_list_[free_count_++] = slot;
      return;
    }
    if (c.flags & io::kCompletionMore) {
      ++sl.notifs;
      ++notifs_outstanding_;
    }
    const int fd = s_->sockets_[sl.sock].get();
    const uint32_t total = wire::kFrameHeaderSize + sl.len;
    if (c.res > 0) {
      last_progress_ = absl::Now();
      sl.sent += c.res;
    }
    const bool retry = c.res == -EAGAIN || c.res == -EINTR;
    if (error_.ok() && (c.res > 0 || retry) && sl.sent < total) {
      // A short send: the rest of this frame goes next on the same connection.
      SubmitSend(slot, fd, sl.sent, total - sl.sent);
      return;
    }
    sending_[sl.sock] = -1;
    --sends_inflight_;
    if (c.res > 0 && sl.sent == total) {
      s_->bytes_sent_.fetch_add(sl.len, std::memory_order_relaxed);
      if (s_->counter_) s_->counter_->fetch_add(sl.len, std::memory_order_relaxed);
      s_->offset_ += sl.len;
      sl.sent_all = true;
      if (sl.notifs == 0) free_list_[free_count_++] = slot;
    } else if (error_.ok()) {
      absl::Status v = s_->PeerVerdict();
      Fail(!v.ok() ? v
                   : ErrnoStatus(absl::StrCat("send(peer socket fd ", fd, ", DATA)"),
                                 c.res == 0 ? EPIPE : -c.res));
    }
  }

  StreamSender* const s_;
  io::IoQueue* const ring_;
  BufferPool* const pool_;
  const uint32_t job_;
  const int data_fd_;
  const Phase phase_;
  const std::atomic<bool>& stop_;
  const std::atomic<bool>& cancel_;
  const uint32_t cap_;
  const size_t nsock_;

  // Small fixed rings of slot indices; no allocation per chunk.
  uint32_t pool_index_[64];  // This job's slot -> buffer in the pool.
  Slot slots_[64];
  uint32_t free_list_[64], ready_[64];
  uint32_t free_count_ = 0, ready_head_ = 0, ready_count_ = 0;
  // Per connection: the slot being sent, or -1.
  int sending_[wire::kMaxStreamsPerDevice];
  uint32_t sends_inflight_ = 0;
  uint32_t notifs_outstanding_ = 0;
  bool head_reserved_ = false;  // The bandwidth for the frame at the head of `ready_` is booked.

  PumpResult result_;
  absl::Status error_;
  bool ended_ = false, read_inflight_ = false, poll_inflight_ = false;
  bool cancel_sent_ = false, read_cancel_sent_ = false;
  bool peer_poll_inflight_ = false, peer_cancel_sent_ = false;
  bool aborted_ = false;  // The ring broke: nothing in flight will complete.
  uint64_t read_tag_ = 0;
  uint64_t remaining_;
  uint64_t read_offset_;
  absl::Time last_progress_ = absl::Now();
  absl::Time send_not_before_ = absl::InfinitePast();
};

std::unique_ptr<PumpJob> StreamSender::MakeCopyJob(io::IoQueue* ring, BufferPool* pool,
                                                   std::span<const uint32_t> slots, uint32_t job,
                                                   int data_fd, Phase phase, uint64_t max_bytes,
                                                   const std::atomic<bool>& stop,
                                                   const std::atomic<bool>& cancel) {
  return std::make_unique<CopyJob>(this, ring, pool, slots, job, data_fd, phase, max_bytes, stop,
                                   cancel);
}

absl::StatusOr<PumpResult> StreamSender::CopyJobResult(const PumpJob& job) {
  return static_cast<const CopyJob&>(job).Result();
}

uint32_t StreamSender::CopyJobSlots() const {
  const uint32_t want = std::min<uint32_t>(
      64, std::max<uint32_t>(options_.buffers, static_cast<uint32_t>(sockets_.size()) + 2));
  return worker_ != nullptr ? std::max<uint32_t>(2, std::min(want, worker_buffers_)) : want;
}

absl::StatusOr<PumpResult> StreamSender::PumpCopy(int data_fd, Phase phase, uint64_t max_bytes,
                                                  const std::atomic<bool>& stop,
                                                  const std::atomic<bool>& cancel) {
  if (worker_ != nullptr) {
    absl::StatusOr<std::unique_ptr<PumpJob>> job = worker_->RunJob(
        CopyJobSlots(),
        [&](io::IoQueue* ring, BufferPool* pool, std::span<const uint32_t> slots, uint32_t id) {
          return MakeCopyJob(ring, pool, slots, id, data_fd, phase, max_bytes, stop, cancel);
        });
    if (!job.ok()) return job.status();
    return CopyJobResult(**job);
  }
  if (ring_ == nullptr) {
    ASSIGN_OR_RETURN(own_ring_, io::CreateIoQueue(options_.io_engine, 64));
    ring_ = own_ring_.get();
  }
  if (pool_ == nullptr) {
    // Made on the first pump that runs on the stream's own ring (a stream handed to a
    // PumpWorker never needs one). Every connection may have a frame in flight while the next
    // ones are read.
    ASSIGN_OR_RETURN(pool_, BufferPool::Create(ring_, CopyJobSlots(), options_.chunk_size,
                                               wire::kFrameHeaderSize));
  }
  CopyJob job(this, ring_, pool_.get(), pool_->all(), 0, data_fd, phase, max_bytes, stop, cancel);
  DriveJob(ring_, job);
  return job.Result();
}

absl::StatusOr<PumpResult> StreamSender::PumpSplice(int data_fd, Phase phase, uint64_t max_bytes,
                                                    const std::atomic<bool>& stop,
                                                    const std::atomic<bool>& cancel,
                                                    bool* unsupported) {
  if (!pipe_read_.valid()) {
    ASSIGN_OR_RETURN(PipeFds p, MakePipe());
    // A pipe as large as a chunk lets one splice carry a whole frame's payload (the kernel
    // rounds the size to pages and caps it at /proc/sys/fs/pipe-max-size for non-root).
    ::fcntl(p.write.get(), F_SETPIPE_SZ,
            options_.pipe_size ? options_.pipe_size : options_.chunk_size);
    pipe_read_ = std::move(p.read);
    pipe_write_ = std::move(p.write);
    for (const UniqueFd& fd : sockets_) SetSendTimeout(fd.get(), kTick);
  }
  // Splice cannot tell an empty pipe from a drained device; the fd's own mode can: only a
  // nonblocking data fd says "nothing more for now" with EAGAIN (as read(2) would).
  const bool data_fd_nonblocking = (::fcntl(data_fd, F_GETFL) & O_NONBLOCK) != 0;
  const bool precopy = phase == Phase::kPreCopy;
  SpliceWaits waits(cancel, options_.idle_timeout, device_);
  PumpResult result;
  uint64_t remaining = max_bytes;
  bool first = true;
  while (true) {
    if (cancel.load()) return absl::CancelledError("stream cancelled");
    if (remaining == 0) {
      result.end = PumpResult::End::kBudget;
      return result;
    }
    if (stop.load()) {
      result.end = PumpResult::End::kStopped;
      return result;
    }
    const uint32_t len = static_cast<uint32_t>(std::min<uint64_t>(options_.chunk_size, remaining));
    const ssize_t got = SpliceOnce(data_fd, pipe_write_.get(), len);
    if (got == -EINVAL && first && result.bytes == 0) {
      *unsupported = true;
      return result;
    }
    first = false;
    if (got == 0 || (precopy && (got == -ENOMSG || (got == -EAGAIN && data_fd_nonblocking)))) {
      result.end = precopy ? PumpResult::End::kDrained : PumpResult::End::kEof;
      return result;
    }
    if (got == -EAGAIN || got == -EINTR) {
      RETURN_IF_ERROR(waits.StillWaiting("waiting on the data fd"));
      WaitFd(data_fd, POLLIN, kTick);
      continue;
    }
    if (got < 0) {
      return ErrnoStatus(absl::StrCat("splice(data fd ", data_fd, " -> pipe, ", len, ", ",
                                      peer::PhaseName(phase), ")"),
                         static_cast<int>(-got));
    }
    waits.Progressed();
    path_used_ = DataPath::kSplice;
    digest_valid_ = false;  // These bytes never pass through userspace.
    const uint32_t n = static_cast<uint32_t>(got);
    if (options_.limiter) {
      const absl::Time until = absl::Now() + options_.limiter->Reserve(wire::kFrameHeaderSize + n);
      while (absl::Now() < until) {
        if (cancel.load()) return absl::CancelledError("stream cancelled");
        absl::SleepFor(std::min(until - absl::Now(), kTick));
      }
      waits.Progressed();
    }
    const size_t k = next_socket_;
    next_socket_ = (k + 1) % sockets_.size();
    const int sock = sockets_[k].get();
    uint8_t hdr[wire::kFrameHeaderSize];
    peer::EncodeHeader(out_.Data(k, phase, n, offset_), hdr);
    uint32_t hdr_sent = 0;
    while (hdr_sent < sizeof(hdr)) {
      // Blocking, bounded by the send timeout; MSG_MORE keeps the header with its payload.
      ssize_t sent = ::send(sock, hdr + hdr_sent, sizeof(hdr) - hdr_sent, MSG_NOSIGNAL | MSG_MORE);
      if (sent > 0) {
        hdr_sent += sent;
        continue;
      }
      if (sent < 0 && (errno == EAGAIN || errno == EINTR)) {
        RETURN_IF_ERROR(waits.StillWaiting("waiting on the peer"));
        continue;
      }
      RETURN_IF_ERROR(PeerVerdict());
      return ErrnoStatus(absl::StrCat("send(peer socket fd ", sock, ", DATA header)"),
                         sent == 0 ? EPIPE : errno);
    }
    uint32_t moved = 0;
    while (moved < n) {
      const ssize_t out = SpliceOnce(pipe_read_.get(), sock, n - moved);
      if (out > 0) {
        moved += out;
        waits.Progressed();
        continue;
      }
      if (out == -EAGAIN || out == -EINTR) {
        RETURN_IF_ERROR(PeerVerdict());
        RETURN_IF_ERROR(waits.StillWaiting("waiting on the peer"));
        continue;
      }
      RETURN_IF_ERROR(PeerVerdict());
      return ErrnoStatus(absl::StrCat("splice(pipe -> peer socket fd ", sock, ", ", n - moved, ")"),
                         out == 0 ? EPIPE : static_cast<int>(-out));
    }
    RETURN_IF_ERROR(PeerVerdict());
    offset_ += n;
    remaining -= n;
    result.bytes += n;
    bytes_sent_.fetch_add(n, std::memory_order_relaxed);
    if (counter_) counter_->fetch_add(n, std::memory_order_relaxed);
  }
}

absl::Status StreamSender::EndPhase(Phase phase) {
  return SendControl(out_.EndPhase(phase));
}

absl::Status StreamSender::Keepalive() {
  RETURN_IF_ERROR(PeerVerdict());
  return SendControl(out_.Keepalive());
}

absl::Status StreamSender::EndStream() {
  return SendControl(out_.EndStream(
      offset_, digest_valid_ ? std::optional<uint64_t>(digest_->Value()) : std::nullopt));
}

absl::Status StreamSender::AwaitCommit(absl::Duration timeout, const std::atomic<bool>& cancel) {
  ASSIGN_OR_RETURN(peer::ControlFrame f,
                   peer::ReadControlFrame(control_fd(), absl::Now() + timeout, &cancel));
  return peer::VerdictOf(f, "destination", kVerdictSeq);
}

void StreamSender::SendError(absl::Status why) {
  (void)net::SendAll(control_fd(), out_.Error(why), absl::Now() + absl::Seconds(1));
}

}  // namespace migmover::stream
