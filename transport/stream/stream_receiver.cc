#include "transport/stream/stream_receiver.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>

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

enum OpKind : uint8_t { kRecvHeader = 1, kRecvPayload = 2, kWrite = 3, kPoll = 4, kSplice = 5 };

constexpr absl::Duration kTick = absl::Milliseconds(100);

}  // namespace


StreamReceiver::StreamReceiver(uring::Ring* ring, UniqueFd socket, uint32_t device,
                               uint64_t next_seq, const StreamOptions& options)
    : ring_(ring),
      socket_(std::move(socket)),
      device_(device),
      next_seq_(next_seq),
      options_(options),
      digest_(new StreamDigest) {}

StreamReceiver::~StreamReceiver() = default;

absl::StatusOr<std::unique_ptr<StreamReceiver>> StreamReceiver::Create(
    uring::Ring* ring, UniqueFd socket, uint32_t device, uint64_t next_seq,
    const StreamOptions& options) {
  if (options.chunk_size == 0 || options.chunk_size > wire::kMaxDataLength ||
      options.buffers < 2) {
    return absl::InvalidArgumentError("receiver: bad chunk size or buffer count");
  }
  std::unique_ptr<StreamReceiver> r(
      new StreamReceiver(ring, std::move(socket), device, next_seq, options));
  net::TuneDataSocket(r->socket_.get(), options.socket_buffer);
  ASSIGN_OR_RETURN(r->pool_, BufferPool::Create(ring, options.buffers, options.chunk_size,
                                                wire::kFrameHeaderSize));
  return r;
}

absl::StatusOr<ReceiveResult> StreamReceiver::Receive(int data_fd,
                                                      const std::atomic<bool>& cancel) {
  DataPath path = ResolveDataPath(options_.data_path, data_fd, options_.auto_spliceable);
  if (path == DataPath::kSplice && !FdSupportsSplice(data_fd)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--data_path=splice: data fd ", data_fd, " does not support splice"));
  }
  path_used_ = path;
  if (path == DataPath::kSplice) return ReceiveSplice(data_fd, cancel);
  return ReceiveCopy(data_fd, cancel);
}

absl::Status StreamReceiver::OnHeader(const FrameHeader& h, uint32_t* data_len, bool* ended,
                                      ReceiveResult* result) {
  *data_len = 0;
  if (h.seq != next_seq_) {
    return absl::DataLossError(absl::StrCat("device stream ", device_, ": frame sequence ", h.seq,
                                            ", expected ", next_seq_));
  }
  ++next_seq_;
  if (h.device != device_) {
    return absl::DataLossError(absl::StrCat("frame for device ", h.device,
                                            " on the connection of device ", device_));
  }
  const auto type = static_cast<FrameType>(h.type);
  const absl::Time deadline = absl::Now() + options_.idle_timeout;
  switch (type) {
    case FrameType::kData:
      if (h.offset != offset_) {
        return absl::DataLossError(absl::StrCat("device stream ", device_, ": DATA at offset ",
                                                h.offset, ", expected ", offset_));
      }
      *data_len = h.length;
      return absl::OkStatus();
    case FrameType::kKeepalive:
      return absl::OkStatus();
    case FrameType::kEndPhase:
      if (h.phase == static_cast<uint8_t>(Phase::kPreCopy)) ++result->precopy_phases_ended;
      return absl::OkStatus();
    case FrameType::kEndStream: {
      ASSIGN_OR_RETURN(std::string payload, peer::ReadControlPayload(socket_.get(), h, deadline));
      ASSIGN_OR_RETURN(end_, peer::ParseEndStream(h, payload));
      *ended = true;
      return absl::OkStatus();
    }
    case FrameType::kError: {
      ASSIGN_OR_RETURN(std::string payload, peer::ReadControlPayload(socket_.get(), h, deadline));
      ASSIGN_OR_RETURN(peer::PeerStatus st, peer::ParseStatus(h, payload));
      return absl::AbortedError(absl::StrCat("source abandoned the stream: ", st.message));
    }
    default:
      return absl::DataLossError(absl::StrCat("unexpected ", peer::FrameTypeName(h.type),
                                              " frame in a device stream"));
  }
}

absl::StatusOr<ReceiveResult> StreamReceiver::ReceiveCopy(int data_fd,
                                                          const std::atomic<bool>& cancel) {
  const uint32_t cap = std::min<uint32_t>(pool_->count(), 64);
  const uint32_t piece_max = pool_->payload_size();
  struct Slot {
    uint32_t len = 0;
    uint32_t written = 0;
  };
  Slot slots[64];
  uint32_t free_list[64], queue[64];
  uint32_t free_count = 0, q_head = 0, q_count = 0;
  for (uint32_t i = 0; i < cap; ++i) free_list[free_count++] = i;

  ReceiveResult result;
  absl::Status error;
  uint8_t hdr[wire::kFrameHeaderSize];
  uint32_t hdr_got = 0;
  enum { kIdle, kHeader, kPayload } recv_state = kIdle;
  bool recv_inflight = false, write_inflight = false, poll_inflight = false, ended = false;
  bool cancel_sent = false;
  uint32_t frame_left = 0;  // DATA payload bytes still to receive.
  uint32_t recv_slot = 0, recv_got = 0, recv_want = 0;
  absl::Time last_progress = absl::Now();

  auto fail = [&](absl::Status s) {
    if (error.ok()) error = std::move(s);
    if (!cancel_sent && (recv_inflight || write_inflight || poll_inflight)) {
      ring_->CancelAll();
      cancel_sent = true;
    }
  };

  while (true) {
    if (error.ok() && !recv_inflight && !ended) {
      if (recv_state == kIdle) {
        recv_state = kHeader;
        hdr_got = 0;
      }
      if (recv_state == kHeader) {
        io_uring_sqe* sqe = ring_->Sqe();
        io_uring_prep_recv(sqe, socket_.get(), hdr + hdr_got, sizeof(hdr) - hdr_got,
                           MSG_WAITALL);
        io_uring_sqe_set_data64(sqe, uring::Tag(kRecvHeader, 0));
        recv_inflight = true;
      } else if (recv_state == kPayload) {
        if (recv_want == 0 && free_count > 0) {
          recv_slot = free_list[--free_count];
          recv_got = 0;
          recv_want = std::min(frame_left, piece_max);
        }
        if (recv_want > 0) {
          io_uring_sqe* sqe = ring_->Sqe();
          io_uring_prep_recv(sqe, socket_.get(), pool_->payload(recv_slot) + recv_got,
                             recv_want - recv_got, MSG_WAITALL);
          io_uring_sqe_set_data64(sqe, uring::Tag(kRecvPayload, recv_slot));
          recv_inflight = true;
        }
      }
    }
    if (error.ok() && !write_inflight && !poll_inflight && q_count > 0) {
      uint32_t slot = queue[q_head];
      io_uring_sqe* sqe = ring_->Sqe();
      io_uring_prep_write_fixed(sqe, data_fd, pool_->payload(slot) + slots[slot].written,
                                slots[slot].len - slots[slot].written, -1, slot);
      io_uring_sqe_set_data64(sqe, uring::Tag(kWrite, slot));
      write_inflight = true;
    }
    if (!recv_inflight && !write_inflight && !poll_inflight) {
      if (!error.ok()) break;
      if (ended && q_count == 0) break;
    }

    uring::Completion c;
    ASSIGN_OR_RETURN(bool got, ring_->Wait(kTick, &c));
    if (!got) {
      if (cancel.load() && error.ok()) fail(absl::CancelledError("stream cancelled"));
      if (absl::Now() - last_progress > options_.idle_timeout && error.ok()) {
        fail(absl::DeadlineExceededError(absl::StrCat(
            "device stream ", device_, ": no progress for ",
            absl::FormatDuration(options_.idle_timeout),
            recv_inflight ? " (waiting on the source)" : " (waiting on the data fd)")));
      }
      continue;
    }
    if (c.user_data == uring::kCancelTag) continue;
    const uint32_t slot = static_cast<uint32_t>(uring::TagValue(c.user_data));
    switch (uring::TagKind(c.user_data)) {
      case kRecvHeader: {
        recv_inflight = false;
        if (!error.ok()) break;
        if (c.res <= 0) {
          if (c.res != -EINTR && c.res != -EAGAIN) fail(RecvFailure(c.res, "before END_STREAM"));
          break;
        }
        last_progress = absl::Now();
        hdr_got += c.res;
        if (hdr_got < sizeof(hdr)) break;
        auto h = peer::DecodeHeader(hdr);
        if (!h.ok()) {
          fail(h.status());
          break;
        }
        uint32_t data_len = 0;
        if (absl::Status s = OnHeader(*h, &data_len, &ended, &result); !s.ok()) {
          fail(s);
          break;
        }
        if (data_len > 0) {
          recv_state = kPayload;
          frame_left = data_len;
          recv_want = 0;
        } else {
          recv_state = kIdle;
        }
        break;
      }
      case kRecvPayload: {
        recv_inflight = false;
        if (!error.ok()) break;
        if (c.res <= 0) {
          if (c.res != -EINTR && c.res != -EAGAIN) fail(RecvFailure(c.res, "inside a DATA frame"));
          break;
        }
        last_progress = absl::Now();
        recv_got += c.res;
        if (recv_got < recv_want) break;
        digest_->Update(pool_->payload(slot), recv_want);
        slots[slot] = Slot{recv_want, 0};
        queue[(q_head + q_count++) % cap] = slot;
        offset_ += recv_want;
        frame_left -= recv_want;
        recv_want = 0;
        if (frame_left == 0) recv_state = kIdle;
        break;
      }
      case kPoll:
        poll_inflight = false;
        break;
      case kWrite: {
        write_inflight = false;
        if (!error.ok()) break;
        Slot& s = slots[slot];
        if (c.res > 0) {
          last_progress = absl::Now();
          s.written += c.res;
          bytes_written_.fetch_add(c.res, std::memory_order_relaxed);
          if (counter_) counter_->fetch_add(c.res, std::memory_order_relaxed);
          if (s.written == s.len) {
            q_head = (q_head + 1) % cap;
            --q_count;
            free_list[free_count++] = slot;
          }
        } else if (c.res == -EAGAIN) {
          io_uring_sqe* sqe = ring_->Sqe();
          io_uring_prep_poll_add(sqe, data_fd, POLLOUT);
          io_uring_sqe_set_data64(sqe, uring::Tag(kPoll, 0));
          poll_inflight = true;
        } else if (c.res != -EINTR) {
          fail(ErrnoStatus(absl::StrCat("write(data fd ", data_fd, ", ", s.len - s.written,
                                        " bytes at stream offset ",
                                        bytes_written_.load(), ")"),
                           c.res == 0 ? EIO : -c.res));
        }
        break;
      }
    }
  }
  if (!error.ok()) return error;
  if (end_.total_bytes != offset_) {
    return absl::DataLossError(absl::StrCat("END_STREAM counts ", end_.total_bytes,
                                            " bytes; ", offset_, " arrived"));
  }
  result.total_bytes = offset_;
  if (end_.digest_kind == wire::DigestKind::kXxh3_64 && digest_valid_) {
    if (digest_->Value() != end_.digest) {
      return absl::DataLossError(
          "stream digest mismatch: the bytes received differ from the bytes the source read");
    }
    result.digest_checked = true;
  }
  return result;
}

absl::Status StreamReceiver::RecvFailure(int res, absl::string_view where) const {
  if (res == 0) {
    return absl::UnavailableError(absl::StrCat("source closed the connection of device stream ",
                                               device_, " at stream offset ", offset_, ", ",
                                               where));
  }
  return ErrnoStatus(absl::StrCat("recv(peer socket fd ", socket_.get(), ", ", where, ")"), -res);
}

absl::StatusOr<int> StreamReceiver::RunOne(const std::atomic<bool>& cancel) {
  return ring_->RunOne(cancel, options_.idle_timeout, absl::StrCat("device stream ", device_));
}

absl::StatusOr<ReceiveResult> StreamReceiver::ReceiveSplice(int data_fd,
                                                            const std::atomic<bool>& cancel) {
  digest_valid_ = false;
  if (!pipe_read_.valid()) {
    ASSIGN_OR_RETURN(PipeFds p, MakePipe());
    ::fcntl(p.write.get(), F_SETPIPE_SZ, options_.chunk_size);
    pipe_read_ = std::move(p.read);
    pipe_write_ = std::move(p.write);
  }
  const int pipe_cap = std::max(::fcntl(pipe_write_.get(), F_GETPIPE_SZ), 4096);
  ReceiveResult result;
  bool ended = false;
  while (!ended) {
    uint8_t hdr[wire::kFrameHeaderSize];
    uint32_t got = 0;
    while (got < sizeof(hdr)) {
      io_uring_sqe* sqe = ring_->Sqe();
      io_uring_prep_recv(sqe, socket_.get(), hdr + got, sizeof(hdr) - got, MSG_WAITALL);
      io_uring_sqe_set_data64(sqe, uring::Tag(kRecvHeader, 0));
      ASSIGN_OR_RETURN(int r, RunOne(cancel));
      if (r == -EINTR || r == -EAGAIN) continue;
      if (r <= 0) return RecvFailure(r, "before END_STREAM");
      got += r;
    }
    ASSIGN_OR_RETURN(FrameHeader h, peer::DecodeHeader(hdr));
    uint32_t left = 0;
    RETURN_IF_ERROR(OnHeader(h, &left, &ended, &result));
    while (left > 0) {
      // Drain after every splice in: a pipe's capacity counts buffers, not bytes, and TCP fills
      // buffers with whatever a segment held, so waiting to gather a fixed amount can fill the
      // pipe with less than that and block forever.
      io_uring_sqe* sqe = ring_->Sqe();
      io_uring_prep_splice(sqe, socket_.get(), -1, pipe_write_.get(), -1,
                           std::min<uint32_t>(left, pipe_cap), SPLICE_F_MOVE);
      io_uring_sqe_set_data64(sqe, uring::Tag(kSplice, 0));
      ASSIGN_OR_RETURN(int in, RunOne(cancel));
      if (in == -EINTR || in == -EAGAIN) continue;
      if (in <= 0) return RecvFailure(in, "inside a DATA frame");
      uint32_t out = 0;
      while (out < static_cast<uint32_t>(in)) {
        sqe = ring_->Sqe();
        io_uring_prep_splice(sqe, pipe_read_.get(), -1, data_fd, -1, in - out, SPLICE_F_MOVE);
        io_uring_sqe_set_data64(sqe, uring::Tag(kSplice, 1));
        ASSIGN_OR_RETURN(int r, RunOne(cancel));
        if (r == -EINTR) continue;
        if (r == -EAGAIN) {
          sqe = ring_->Sqe();
          io_uring_prep_poll_add(sqe, data_fd, POLLOUT);
          io_uring_sqe_set_data64(sqe, uring::Tag(kPoll, 0));
          ASSIGN_OR_RETURN(int unused, RunOne(cancel));
          (void)unused;
          continue;
        }
        if (r <= 0) {
          return ErrnoStatus(absl::StrCat("splice(pipe -> data fd ", data_fd, ", ", in - out,
                                          " bytes at stream offset ", offset_ + out, ")"),
                             r == 0 ? EIO : -r);
        }
        out += r;
        bytes_written_.fetch_add(r, std::memory_order_relaxed);
        if (counter_) counter_->fetch_add(r, std::memory_order_relaxed);
      }
      offset_ += in;
      left -= in;
    }
  }
  if (end_.total_bytes != offset_) {
    return absl::DataLossError(absl::StrCat("END_STREAM counts ", end_.total_bytes,
                                            " bytes; ", offset_, " arrived"));
  }
  result.total_bytes = offset_;
  return result;
}

absl::Status StreamReceiver::SendCommit(const absl::Status& verdict, absl::Duration linger) {
  peer::PeerStatus st{static_cast<uint32_t>(verdict.code()), std::string(verdict.message())};
  absl::Status sent =
      net::SendAll(socket_.get(),
                   peer::EncodeStatusFrame(FrameType::kCommit, next_seq_out_++, device_, st),
                   absl::Now() + (verdict.ok() ? options_.idle_timeout : linger));
  if (verdict.ok() || !sent.ok()) return sent;
  // Closing with unread data would reset the connection and could drop the verdict.
  ::shutdown(socket_.get(), SHUT_WR);
  const absl::Time until = absl::Now() + linger;
  char sink[64 << 10];
  while (absl::Now() < until) {
    pollfd p{socket_.get(), POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    ssize_t n = ::recv(socket_.get(), sink, sizeof(sink), MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) break;
  }
  return sent;
}

}  // namespace migmover::stream
