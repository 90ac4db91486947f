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

namespace migmover::stream {
namespace {

using wire::FrameHeader;
using wire::FrameType;
using wire::Phase;

enum OpKind : uint8_t { kRead = 1, kPoll = 2, kSend = 3, kSplice = 4 };

constexpr absl::Duration kTick = absl::Milliseconds(100);

FrameHeader DataHeader(uint64_t seq, uint32_t device, Phase phase, uint32_t len, uint64_t offset) {
  return FrameHeader{wire::kFrameMagic,
                     static_cast<uint8_t>(FrameType::kData),
                     static_cast<uint8_t>(phase),
                     0,
                     device,
                     len,
                     seq,
                     offset};
}

}  // namespace

StreamSender::StreamSender(uring::Ring* ring, std::vector<UniqueFd> sockets, uint32_t device,
                           const StreamOptions& options)
    : ring_(ring),
      sockets_(std::move(sockets)),
      seqs_(sockets_.size(), 0),
      device_(device),
      options_(options),
      digest_(new StreamDigest) {}

StreamSender::~StreamSender() = default;

absl::StatusOr<std::unique_ptr<StreamSender>> StreamSender::Create(uring::Ring* ring,
                                                                   UniqueFd socket, uint32_t device,
                                                                   const StreamOptions& options) {
  std::vector<UniqueFd> sockets;
  sockets.push_back(std::move(socket));
  return Create(ring, std::move(sockets), device, options);
}

absl::StatusOr<std::unique_ptr<StreamSender>> StreamSender::Create(uring::Ring* ring,
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
  const size_t n = sockets.size();
  std::unique_ptr<StreamSender> s(new StreamSender(ring, std::move(sockets), device, options));
  for (const UniqueFd& fd : s->sockets_) net::TuneDataSocket(fd.get(), options.socket_buffer);
  // Every connection may have a frame in flight while the next ones are read.
  const uint32_t buffers =
      std::min<uint32_t>(64, std::max<uint32_t>(options.buffers, static_cast<uint32_t>(n) + 2));
  ASSIGN_OR_RETURN(s->pool_,
                   BufferPool::Create(ring, buffers, options.chunk_size, wire::kFrameHeaderSize));
  return s;
}

absl::Status StreamSender::SendControl(const std::string& frame) {
  ++seqs_[0];
  return net::SendAll(control_fd(), frame, absl::Now() + options_.idle_timeout);
}

absl::Status StreamSender::Handshake(const peer::Hello& hello, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  for (size_t k = 0; k < sockets_.size(); ++k) {
    peer::Hello h = hello;
    h.stream = static_cast<uint16_t>(k);
    h.stream_count = static_cast<uint16_t>(sockets_.size());
    RETURN_IF_ERROR(net::SendAll(sockets_[k].get(), peer::EncodeHello(seqs_[k]++, h), deadline));
  }
  for (size_t k = 0; k < sockets_.size(); ++k) {
    ASSIGN_OR_RETURN(peer::ControlFrame f, peer::ReadControlFrame(sockets_[k].get(), deadline));
    if (f.header.type != static_cast<uint8_t>(FrameType::kHelloAck)) {
      return absl::DataLossError(
          absl::StrCat("handshake: expected HELLO_ACK, got ", peer::FrameTypeName(f.header.type)));
    }
    ASSIGN_OR_RETURN(peer::PeerStatus st, peer::ParseStatus(f.header, f.payload));
    if (st.code != 0) {
      return absl::Status(static_cast<absl::StatusCode>(st.code),
                          absl::StrCat("destination refused the stream: ", st.message));
    }
  }
  return absl::OkStatus();
}

absl::Status StreamSender::PeerVerdict() {
  pollfd p{control_fd(), POLLIN, 0};
  if (::poll(&p, 1, 0) <= 0 || !(p.revents & (POLLIN | POLLHUP | POLLERR))) {
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(peer::ControlFrame f,
                   peer::ReadControlFrame(control_fd(), absl::Now() + absl::Seconds(1)));
  absl::Status verdict = peer::VerdictOf(f, "destination gave up", absl::StatusCode::kAborted);
  // Even a COMMIT(0) is wrong mid-stream: nothing was committed yet.
  return verdict.ok() ? absl::DataLossError("destination committed before END_STREAM") : verdict;
}

absl::StatusOr<PumpResult> StreamSender::Pump(int data_fd, Phase phase, uint64_t max_bytes,
                                              const std::atomic<bool>& stop,
                                              const std::atomic<bool>& cancel) {
  const DataPath path = ResolveDataPath(options_.data_path, data_fd, options_.auto_spliceable);
  if (path == DataPath::kSplice) {
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

absl::StatusOr<PumpResult> StreamSender::PumpCopy(int data_fd, Phase phase, uint64_t max_bytes,
                                                  const std::atomic<bool>& stop,
                                                  const std::atomic<bool>& cancel) {
  const uint32_t n = pool_->count();
  struct Slot {
    uint32_t len = 0;
    uint32_t sent = 0;
    uint64_t offset = 0;
    uint32_t sock = 0;  // The connection the frame goes out on, once assigned.
    // SEND_ZC: the kernel still reads the buffer until each send's notification arrives.
    uint32_t notifs = 0;
    bool sent_all = false;
  };
  // Small fixed rings of slot indices; no allocation per chunk.
  Slot slots[64];
  uint32_t free_list[64], ready[64];
  const uint32_t cap = std::min<uint32_t>(n, 64);
  uint32_t free_count = 0, ready_head = 0, ready_count = 0;
  for (uint32_t i = 0; i < cap; ++i) free_list[free_count++] = i;

  PumpResult result;
  absl::Status error;
  bool ended = false, read_inflight = false, poll_inflight = false;
  // Per connection: the slot being sent, or -1. One frame at a time per connection keeps each
  // connection's frames in stream order.
  int sending[wire::kMaxStreamsPerDevice];
  const size_t nsock = sockets_.size();
  for (size_t k = 0; k < nsock; ++k) sending[k] = -1;
  uint32_t sends_inflight = 0;
  bool head_reserved = false;  // The bandwidth for the frame at the head of `ready` is booked.
  bool cancel_sent = false;
  bool read_cancel_sent = false;
  uint64_t read_tag = 0;
  uint64_t remaining = max_bytes;
  uint64_t read_offset = offset_;
  absl::Time last_progress = absl::Now();
  absl::Time send_not_before = absl::InfinitePast();

  uint32_t notifs_outstanding = 0;
  auto submit_send = [&](uint32_t slot, int fd, uint32_t from, uint32_t len) {
    io_uring_sqe* sqe = ring_->Sqe();
    if (options_.send_zc) {
      io_uring_prep_send_zc_fixed(sqe, fd, pool_->base(slot) + from, len, MSG_NOSIGNAL, 0, slot);
    } else {
      io_uring_prep_send(sqe, fd, pool_->base(slot) + from, len, MSG_NOSIGNAL);
    }
    io_uring_sqe_set_data64(sqe, uring::Tag(kSend, slot));
  };
  auto fail = [&](absl::Status s) {
    if (error.ok()) error = std::move(s);
    ended = true;
    if (!cancel_sent &&
        (read_inflight || poll_inflight || sends_inflight > 0 || notifs_outstanding > 0)) {
      ring_->CancelAll();
      cancel_sent = true;
    }
  };

  while (true) {
    if (!ended && !read_inflight && !poll_inflight) {
      if (cancel.load()) {
        fail(absl::CancelledError("stream cancelled"));
      } else if (remaining == 0) {
        ended = true;
        result.end = PumpResult::End::kBudget;
      } else if (stop.load()) {
        ended = true;
        result.end = PumpResult::End::kStopped;
      } else if (free_count > 0) {
        uint32_t slot = free_list[--free_count];
        uint32_t len = static_cast<uint32_t>(std::min<uint64_t>(options_.chunk_size, remaining));
        io_uring_sqe* sqe = ring_->Sqe();
        // Offset -1: the fd's own position, as read(2); data fds are streams.
        io_uring_prep_read_fixed(sqe, data_fd, pool_->payload(slot), len, -1, slot);
        read_tag = uring::Tag(kRead, slot);
        io_uring_sqe_set_data64(sqe, read_tag);
        read_inflight = true;
        read_cancel_sent = false;
      }
    }
    // Hand ready frames, in stream order, to free connections.
    while (ready_count > 0 && error.ok() && sends_inflight < nsock) {
      const uint32_t slot = ready[ready_head];
      Slot& s = slots[slot];
      if (options_.limiter && !head_reserved) {
        send_not_before = absl::Now() + options_.limiter->Reserve(wire::kFrameHeaderSize + s.len);
        head_reserved = true;
      }
      if (absl::Now() < send_not_before) break;
      size_t k = next_socket_;
      while (sending[k] >= 0) k = (k + 1) % nsock;
      next_socket_ = (k + 1) % nsock;
      head_reserved = false;
      ready_head = (ready_head + 1) % cap;
      --ready_count;
      s.sock = static_cast<uint32_t>(k);
      uint8_t* frame = pool_->base(slot);
      peer::EncodeHeader(DataHeader(seqs_[k]++, device_, phase, s.len, s.offset),
                         std::span<uint8_t, wire::kFrameHeaderSize>(frame, wire::kFrameHeaderSize));
      submit_send(slot, sockets_[k].get(), 0, wire::kFrameHeaderSize + s.len);
      sending[k] = static_cast<int>(slot);
      ++sends_inflight;
    }
    if (!read_inflight && !poll_inflight && sends_inflight == 0 && notifs_outstanding == 0) {
      if (ended && (ready_count == 0 || !error.ok())) break;
      // Otherwise a frame waits for the bandwidth cap: the Wait below is the sleep.
    }

    uring::Completion batch[32];
    absl::Duration tick = kTick;
    if (send_not_before > absl::Now()) tick = std::min(tick, send_not_before - absl::Now());
    ASSIGN_OR_RETURN(size_t got, ring_->WaitBatch(tick, batch));
    if (got == 0) {
      if (cancel.load() && !ended) fail(absl::CancelledError("stream cancelled"));
      // Switchover must not wait on a PRE_COPY read that the driver cannot satisfy (a precopy
      // estimate that overshot): withdraw it. Only the read: a send must never be cut.
      if (stop.load() && phase == Phase::kPreCopy && read_inflight && !read_cancel_sent) {
        ring_->Cancel(read_tag);
        read_cancel_sent = true;
      }
      if (send_not_before > last_progress) last_progress = std::min(absl::Now(), send_not_before);
      if (absl::Now() - last_progress > options_.idle_timeout && error.ok()) {
        fail(absl::DeadlineExceededError(
            absl::StrCat("device stream ", device_, ": no progress for ",
                         absl::FormatDuration(options_.idle_timeout),
                         read_inflight ? " (waiting on the data fd)" : " (waiting on the peer)")));
      }
      continue;
    }
    for (size_t ci = 0; ci < got; ++ci) {
      const uring::Completion& c = batch[ci];
      if (c.user_data == uring::kCancelTag) continue;
      const uint32_t slot = static_cast<uint32_t>(uring::TagValue(c.user_data));
      switch (uring::TagKind(c.user_data)) {
        case kRead: {
          read_inflight = false;
          if (c.res > 0) {
            last_progress = absl::Now();
            digest_->Update(pool_->payload(slot), c.res);
            slots[slot] = Slot{static_cast<uint32_t>(c.res), 0, read_offset, 0, 0, false};
            read_offset += c.res;
            remaining -= c.res;
            result.bytes += c.res;
            ready[(ready_head + ready_count++) % cap] = slot;
            break;
          }
          free_list[free_count++] = slot;
          if (ended) break;  // Cancelled read.
          if (c.res == -ECANCELED && read_cancel_sent) {
            ended = true;
            result.end = PumpResult::End::kStopped;
            break;
          }
          const bool precopy = phase == Phase::kPreCopy;
          if (c.res == 0 || (precopy && (c.res == -ENOMSG || c.res == -EAGAIN))) {
            ended = true;
            result.end = precopy ? PumpResult::End::kDrained : PumpResult::End::kEof;
          } else if (c.res == -EAGAIN) {
            io_uring_sqe* sqe = ring_->Sqe();
            io_uring_prep_poll_add(sqe, data_fd, POLLIN);
            io_uring_sqe_set_data64(sqe, uring::Tag(kPoll, 0));
            poll_inflight = true;
          } else if (c.res != -EINTR) {
            fail(ErrnoStatus(
                absl::StrCat("read(data fd ", data_fd, ", ", peer::PhaseName(phase), ")"), -c.res));
          }
          break;
        }
        case kPoll:
          poll_inflight = false;
          break;
        case kSend: {
          Slot& s = slots[slot];
          if (c.flags & IORING_CQE_F_NOTIF) {
            // SEND_ZC: the kernel is done with the buffer of one send of this frame.
            --s.notifs;
            --notifs_outstanding;
            if (s.notifs == 0 && s.sent_all) free_list[free_count++] = slot;
            break;
          }
          if (c.flags & IORING_CQE_F_MORE) {
            ++s.notifs;
            ++notifs_outstanding;
          }
          const int fd = sockets_[s.sock].get();
          const uint32_t total = wire::kFrameHeaderSize + s.len;
          if (c.res > 0) {
            last_progress = absl::Now();
            s.sent += c.res;
          }
          const bool retry = c.res == -EAGAIN || c.res == -EINTR;
          if (error.ok() && (c.res > 0 || retry) && s.sent < total) {
            // A short send: the rest of this frame goes next on the same connection.
            submit_send(slot, fd, s.sent, total - s.sent);
            break;
          }
          sending[s.sock] = -1;
          --sends_inflight;
          if (c.res > 0 && s.sent == total) {
            bytes_sent_.fetch_add(s.len, std::memory_order_relaxed);
            if (counter_) counter_->fetch_add(s.len, std::memory_order_relaxed);
            offset_ += s.len;
            s.sent_all = true;
            if (s.notifs == 0) free_list[free_count++] = slot;
            if (absl::Status v = PeerVerdict(); !v.ok()) fail(v);
          } else if (error.ok()) {
            absl::Status v = PeerVerdict();
            fail(!v.ok() ? v
                         : ErrnoStatus(absl::StrCat("send(peer socket fd ", fd, ", DATA)"),
                                       c.res == 0 ? EPIPE : -c.res));
          }
          break;
        }
      }
    }
  }
  if (!error.ok()) return error;
  return result;
}

absl::StatusOr<int> StreamSender::RunOne(const std::atomic<bool>& cancel) {
  return ring_->RunOne(cancel, options_.idle_timeout, absl::StrCat("device stream ", device_));
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
  }
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
    io_uring_sqe* sqe = ring_->Sqe();
    io_uring_prep_splice(sqe, data_fd, -1, pipe_write_.get(), -1, len, SPLICE_F_MOVE);
    io_uring_sqe_set_data64(sqe, uring::Tag(kSplice, 0));
    ASSIGN_OR_RETURN(int got, RunOne(cancel));
    if (got == -EINVAL && first && result.bytes == 0) {
      *unsupported = true;
      return result;
    }
    first = false;
    const bool precopy = phase == Phase::kPreCopy;
    if (got == 0 || (precopy && (got == -EAGAIN || got == -ENOMSG))) {
      result.end = precopy ? PumpResult::End::kDrained : PumpResult::End::kEof;
      return result;
    }
    if (got == -EAGAIN) {
      sqe = ring_->Sqe();
      io_uring_prep_poll_add(sqe, data_fd, POLLIN);
      io_uring_sqe_set_data64(sqe, uring::Tag(kPoll, 0));
      ASSIGN_OR_RETURN(int unused, RunOne(cancel));
      (void)unused;
      continue;
    }
    if (got == -EINTR) continue;
    if (got < 0) {
      return ErrnoStatus(absl::StrCat("splice(data fd ", data_fd, " -> pipe, ", len, ", ",
                                      peer::PhaseName(phase), ")"),
                         -got);
    }
    path_used_ = DataPath::kSplice;
    digest_valid_ = false;  // These bytes never pass through userspace.
    const uint32_t n = static_cast<uint32_t>(got);
    if (options_.limiter) {
      const absl::Time until = absl::Now() + options_.limiter->Reserve(wire::kFrameHeaderSize + n);
      while (absl::Now() < until) {
        if (cancel.load()) return absl::CancelledError("stream cancelled");
        absl::SleepFor(std::min(until - absl::Now(), kTick));
      }
    }
    const size_t k = next_socket_;
    next_socket_ = (k + 1) % sockets_.size();
    const int sock = sockets_[k].get();
    uint8_t hdr[wire::kFrameHeaderSize];
    peer::EncodeHeader(DataHeader(seqs_[k]++, device_, phase, n, offset_), hdr);
    uint32_t hdr_sent = 0;
    while (hdr_sent < sizeof(hdr)) {
      sqe = ring_->Sqe();
      io_uring_prep_send(sqe, sock, hdr + hdr_sent, sizeof(hdr) - hdr_sent,
                         MSG_NOSIGNAL | MSG_MORE);
      io_uring_sqe_set_data64(sqe, uring::Tag(kSend, 0));
      ASSIGN_OR_RETURN(int sent, RunOne(cancel));
      if (sent == -EAGAIN || sent == -EINTR) continue;
      if (sent <= 0) {
        return ErrnoStatus(absl::StrCat("send(peer socket fd ", sock, ", DATA header)"),
                           sent == 0 ? EPIPE : -sent);
      }
      hdr_sent += sent;
    }
    uint32_t moved = 0;
    while (moved < n) {
      sqe = ring_->Sqe();
      io_uring_prep_splice(sqe, pipe_read_.get(), -1, sock, -1, n - moved, SPLICE_F_MOVE);
      io_uring_sqe_set_data64(sqe, uring::Tag(kSplice, 1));
      ASSIGN_OR_RETURN(int out, RunOne(cancel));
      if (out == -EAGAIN || out == -EINTR) continue;
      if (out <= 0) {
        RETURN_IF_ERROR(PeerVerdict());
        return ErrnoStatus(
            absl::StrCat("splice(pipe -> peer socket fd ", sock, ", ", n - moved, ")"),
            out == 0 ? EPIPE : -out);
      }
      moved += out;
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
  return SendControl(peer::EncodeEndPhase(seqs_[0], device_, phase));
}

absl::Status StreamSender::Keepalive() {
  RETURN_IF_ERROR(PeerVerdict());
  return SendControl(peer::EncodeKeepalive(seqs_[0], device_));
}

absl::Status StreamSender::EndStream() {
  peer::EndStream end;
  end.total_bytes = offset_;
  if (digest_valid_) {
    end.digest = digest_->Value();
    end.digest_kind = wire::DigestKind::kXxh3_64;
  }
  return SendControl(peer::EncodeEndStream(seqs_[0], device_, end));
}

absl::Status StreamSender::AwaitCommit(absl::Duration timeout, const std::atomic<bool>& cancel) {
  ASSIGN_OR_RETURN(peer::ControlFrame f,
                   peer::ReadControlFrame(control_fd(), absl::Now() + timeout, &cancel));
  return peer::VerdictOf(f, "destination", absl::StatusCode::kUnknown);
}

void StreamSender::SendError(absl::Status why) {
  peer::PeerStatus st{static_cast<uint32_t>(why.code()), std::string(why.message())};
  (void)net::SendAll(control_fd(),
                     peer::EncodeStatusFrame(FrameType::kError, seqs_[0]++, device_, st),
                     absl::Now() + absl::Seconds(1));
}

}  // namespace migmover::stream
