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

StreamReceiver::StreamReceiver(uring::Ring* ring, std::vector<UniqueFd> sockets, uint32_t device,
                               uint64_t next_seq, const StreamOptions& options)
    : ring_(ring),
      sockets_(std::move(sockets)),
      device_(device),
      next_seqs_(sockets_.size(), next_seq),
      last_offsets_(sockets_.size(), 0),
      options_(options),
      digest_(new StreamDigest) {}

StreamReceiver::~StreamReceiver() = default;

absl::StatusOr<std::unique_ptr<StreamReceiver>> StreamReceiver::Create(
    uring::Ring* ring, UniqueFd socket, uint32_t device, uint64_t next_seq,
    const StreamOptions& options) {
  std::vector<UniqueFd> sockets;
  sockets.push_back(std::move(socket));
  std::unique_ptr<StreamReceiver> r;
  ASSIGN_OR_RETURN(r, Create(ring, std::move(sockets), device, options));
  r->next_seqs_[0] = next_seq;
  return r;
}

absl::StatusOr<std::unique_ptr<StreamReceiver>> StreamReceiver::Create(
    uring::Ring* ring, std::vector<UniqueFd> sockets, uint32_t device,
    const StreamOptions& options) {
  if (options.chunk_size == 0 || options.chunk_size > wire::kMaxDataLength || options.buffers < 2) {
    return absl::InvalidArgumentError("receiver: bad chunk size or buffer count");
  }
  if (sockets.empty() || sockets.size() > wire::kMaxStreamsPerDevice) {
    return absl::InvalidArgumentError(
        absl::StrCat("a device stream takes 1..", wire::kMaxStreamsPerDevice, " connections"));
  }
  const uint32_t n = static_cast<uint32_t>(sockets.size());
  std::unique_ptr<StreamReceiver> r(
      new StreamReceiver(ring, std::move(sockets), device, 1, options));
  for (const UniqueFd& fd : r->sockets_) net::TuneDataSocket(fd.get(), options.socket_buffer);
  // At least two buffers per connection: one filling while an earlier one is written.
  const uint32_t buffers = std::min<uint32_t>(64, std::max(options.buffers, 2 * n));
  ASSIGN_OR_RETURN(r->pool_,
                   BufferPool::Create(ring, buffers, options.chunk_size, wire::kFrameHeaderSize));
  return r;
}

absl::StatusOr<ReceiveResult> StreamReceiver::Receive(int data_fd,
                                                      const std::atomic<bool>& cancel) {
  DataPath path = ResolveDataPath(options_.data_path, data_fd, options_.auto_spliceable);
  if (path == DataPath::kSplice && !FdSupportsSplice(data_fd)) {
    return absl::FailedPreconditionError(
        absl::StrCat("--data_path=splice: data fd ", data_fd, " does not support splice"));
  }
  // Striped frames must be put back in order in buffers: splice cannot reorder.
  if (sockets_.size() > 1) path = DataPath::kCopy;
  path_used_ = path;
  if (path == DataPath::kSplice) return ReceiveSplice(data_fd, cancel);
  return ReceiveCopy(data_fd, cancel);
}

absl::Status StreamReceiver::OnHeader(size_t k, const FrameHeader& h, uint32_t* data_len,
                                      bool* ended, ReceiveResult* result) {
  *data_len = 0;
  if (h.seq != next_seqs_[k]) {
    return absl::DataLossError(absl::StrCat("device stream ", device_, " connection ", k,
                                            ": frame sequence ", h.seq, ", expected ",
                                            next_seqs_[k]));
  }
  ++next_seqs_[k];
  if (h.device != device_) {
    return absl::DataLossError(
        absl::StrCat("frame for device ", h.device, " on the connection of device ", device_));
  }
  const auto type = static_cast<FrameType>(h.type);
  if (k != 0 && type != FrameType::kData) {
    return absl::DataLossError(absl::StrCat(peer::FrameTypeName(h.type), " on striped connection ",
                                            k, " (control frames travel on the first)"));
  }
  const absl::Time deadline = absl::Now() + options_.idle_timeout;
  const int fd = sockets_[k].get();
  switch (type) {
    case FrameType::kData:
      if (sockets_.size() == 1 ? h.offset != offset_ : h.offset < last_offsets_[k]) {
        return absl::DataLossError(absl::StrCat("device stream ", device_, ": DATA at offset ",
                                                h.offset, ", expected ",
                                                sockets_.size() == 1 ? offset_ : last_offsets_[k]));
      }
      last_offsets_[k] = h.offset + h.length;
      *data_len = h.length;
      return absl::OkStatus();
    case FrameType::kKeepalive:
      return absl::OkStatus();
    case FrameType::kEndPhase:
      if (h.phase == static_cast<uint8_t>(Phase::kPreCopy)) ++result->precopy_phases_ended;
      return absl::OkStatus();
    case FrameType::kEndStream: {
      ASSIGN_OR_RETURN(std::string payload, peer::ReadControlPayload(fd, h, deadline));
      ASSIGN_OR_RETURN(end_, peer::ParseEndStream(h, payload));
      *ended = true;
      return absl::OkStatus();
    }
    case FrameType::kError: {
      ASSIGN_OR_RETURN(std::string payload, peer::ReadControlPayload(fd, h, deadline));
      ASSIGN_OR_RETURN(peer::PeerStatus st, peer::ParseStatus(h, payload));
      return absl::AbortedError(absl::StrCat("source abandoned the stream: ", st.message));
    }
    default:
      return absl::DataLossError(
          absl::StrCat("unexpected ", peer::FrameTypeName(h.type), " frame in a device stream"));
  }
}

absl::StatusOr<ReceiveResult> StreamReceiver::ReceiveCopy(int data_fd,
                                                          const std::atomic<bool>& cancel) {
  const uint32_t cap = std::min<uint32_t>(pool_->count(), 64);
  const uint32_t piece_max = pool_->payload_size();
  const size_t nsock = sockets_.size();
  // Each connection may hold this many buffers awaiting their turn to be written.
  const uint32_t quota = std::max<uint32_t>(1, cap / static_cast<uint32_t>(nsock));

  // A received piece of stream, waiting to be written in order.
  struct Piece {
    uint64_t offset = 0;
    uint32_t len = 0;
    uint32_t written = 0;
    uint32_t sock = 0;
  };
  Piece pieces[64];
  bool held[64] = {};  // pieces[slot] holds received bytes not yet written.
  uint32_t free_list[64];
  uint32_t free_count = 0;
  for (uint32_t i = 0; i < cap; ++i) free_list[free_count++] = i;

  // Per connection receive state.
  struct Conn {
    uint8_t hdr[wire::kFrameHeaderSize];
    uint32_t hdr_got = 0;
    enum { kIdle, kHeader, kPayload } state = kIdle;
    uint32_t frame_left = 0;    // DATA payload bytes still to receive.
    uint64_t frame_offset = 0;  // Stream offset of the next payload byte.
    uint32_t slot = 0, got = 0, want = 0;
    uint32_t used = 0;  // Buffers this connection holds.
    bool inflight = false;
  };
  Conn conns[wire::kMaxStreamsPerDevice];

  ReceiveResult result;
  absl::Status error;
  bool write_inflight = false, poll_inflight = false, ended = false, cancel_sent = false;
  int writing = -1;           // The slot being written.
  uint64_t write_offset = 0;  // Stream bytes written to the data fd.
  uint64_t received = 0;      // Stream bytes received.
  absl::Time last_progress = absl::Now();

  auto any_inflight = [&] {
    if (write_inflight || poll_inflight) return true;
    for (size_t k = 0; k < nsock; ++k) {
      if (conns[k].inflight) return true;
    }
    return false;
  };
  auto fail = [&](absl::Status s) {
    if (error.ok()) error = std::move(s);
    if (!cancel_sent && any_inflight()) {
      ring_->CancelAll();
      cancel_sent = true;
    }
  };
  auto complete = [&] {
    return ended && received == end_.total_bytes && write_offset == received && !write_inflight;
  };

  while (true) {
    const bool done = error.ok() && complete();
    if (done && !cancel_sent && any_inflight()) {
      // Every byte is in: the other connections' pending receives will never complete.
      ring_->CancelAll();
      cancel_sent = true;
    }
    for (size_t k = 0; k < nsock && error.ok() && !done; ++k) {
      Conn& cn = conns[k];
      // After END_STREAM the first connection carries only our COMMIT back.
      if (cn.inflight || (ended && k == 0)) continue;
      if (cn.state == Conn::kIdle) {
        cn.state = Conn::kHeader;
        cn.hdr_got = 0;
      }
      if (cn.state == Conn::kHeader) {
        io_uring_sqe* sqe = ring_->Sqe();
        io_uring_prep_recv(sqe, sockets_[k].get(), cn.hdr + cn.hdr_got, sizeof(cn.hdr) - cn.hdr_got,
                           MSG_WAITALL);
        io_uring_sqe_set_data64(sqe, uring::Tag(kRecvHeader, k));
        cn.inflight = true;
      } else if (cn.state == Conn::kPayload) {
        if (cn.want == 0 && free_count > 0 && cn.used < quota) {
          cn.slot = free_list[--free_count];
          ++cn.used;
          cn.got = 0;
          cn.want = std::min(cn.frame_left, piece_max);
        }
        if (cn.want > 0) {
          io_uring_sqe* sqe = ring_->Sqe();
          io_uring_prep_recv(sqe, sockets_[k].get(), pool_->payload(cn.slot) + cn.got,
                             cn.want - cn.got, MSG_WAITALL);
          io_uring_sqe_set_data64(sqe, uring::Tag(kRecvPayload, k));
          cn.inflight = true;
        }
      }
    }
    if (error.ok() && !write_inflight && !poll_inflight) {
      if (writing < 0) {
        // The piece that continues the stream, if it has arrived.
        for (uint32_t i = 0; i < cap; ++i) {
          if (held[i] && pieces[i].offset == write_offset) {
            writing = static_cast<int>(i);
            digest_->Update(pool_->payload(i), pieces[i].len);
            break;
          }
        }
      }
      if (writing >= 0) {
        const Piece& pc = pieces[writing];
        io_uring_sqe* sqe = ring_->Sqe();
        io_uring_prep_write_fixed(sqe, data_fd, pool_->payload(writing) + pc.written,
                                  pc.len - pc.written, -1, writing);
        io_uring_sqe_set_data64(sqe, uring::Tag(kWrite, writing));
        write_inflight = true;
      } else if (ended && received == end_.total_bytes && write_offset < received) {
        // Every byte the source counted has arrived, yet the next one is missing: the frames
        // left a hole (and so overlapped elsewhere).
        fail(absl::DataLossError(absl::StrCat("device stream ", device_,
                                              ": the striped frames leave a hole at offset ",
                                              write_offset)));
      }
    }
    if (!any_inflight()) {
      if (!error.ok() || done) break;
      // Every connection waits for a buffer that only a missing piece would free: the source
      // left a hole (or overlapped) in the stream.
      fail(absl::DataLossError(absl::StrCat("device stream ", device_, ": no piece at offset ",
                                            write_offset, " and no room to receive one")));
      continue;
    }

    uring::Completion batch[32];
    ASSIGN_OR_RETURN(size_t got, ring_->WaitBatch(kTick, batch));
    if (got == 0) {
      if (cancel.load() && error.ok()) fail(absl::CancelledError("stream cancelled"));
      if (absl::Now() - last_progress > options_.idle_timeout && error.ok() && !done) {
        fail(absl::DeadlineExceededError(absl::StrCat(
            "device stream ", device_, ": no progress for ",
            absl::FormatDuration(options_.idle_timeout),
            write_inflight ? " (waiting on the data fd)" : " (waiting on the source)")));
      }
      continue;
    }
    for (size_t ci = 0; ci < got; ++ci) {
      const uring::Completion& c = batch[ci];
      if (c.user_data == uring::kCancelTag) continue;
      const uint32_t v = static_cast<uint32_t>(uring::TagValue(c.user_data));
      switch (uring::TagKind(c.user_data)) {
        case kRecvHeader: {
          Conn& cn = conns[v];
          cn.inflight = false;
          if (!error.ok() || done) break;
          if (c.res <= 0) {
            if (c.res != -EINTR && c.res != -EAGAIN) fail(RecvFailure(c.res, "before END_STREAM"));
            break;
          }
          last_progress = absl::Now();
          cn.hdr_got += c.res;
          if (cn.hdr_got < sizeof(cn.hdr)) break;
          auto h = peer::DecodeHeader(cn.hdr);
          if (!h.ok()) {
            fail(h.status());
            break;
          }
          uint32_t data_len = 0;
          if (absl::Status s = OnHeader(v, *h, &data_len, &ended, &result); !s.ok()) {
            fail(s);
            break;
          }
          if (data_len > 0) {
            if (h->offset < write_offset) {
              fail(absl::DataLossError(absl::StrCat("device stream ", device_, ": DATA at offset ",
                                                    h->offset, " overlaps bytes already written")));
              break;
            }
            cn.state = Conn::kPayload;
            cn.frame_left = data_len;
            cn.frame_offset = h->offset;
            cn.want = 0;
          } else {
            cn.state = Conn::kIdle;
          }
          // On one connection nothing follows END_STREAM; striped, frames on the other
          // connections may still be on their way.
          if (ended &&
              (received > end_.total_bytes || (nsock == 1 && received != end_.total_bytes))) {
            fail(absl::DataLossError(absl::StrCat("END_STREAM counts ", end_.total_bytes,
                                                  " bytes; ", received, " arrived")));
          }
          break;
        }
        case kRecvPayload: {
          Conn& cn = conns[v];
          cn.inflight = false;
          if (!error.ok() || done) break;
          if (c.res <= 0) {
            if (c.res != -EINTR && c.res != -EAGAIN)
              fail(RecvFailure(c.res, "inside a DATA frame"));
            break;
          }
          last_progress = absl::Now();
          cn.got += c.res;
          if (cn.got < cn.want) break;
          for (uint32_t i = 0; i < cap; ++i) {
            if (held[i] && pieces[i].offset == cn.frame_offset) {
              fail(absl::DataLossError(absl::StrCat(
                  "device stream ", device_, ": two DATA frames at offset ", cn.frame_offset)));
            }
          }
          if (!error.ok()) break;
          pieces[cn.slot] = Piece{cn.frame_offset, cn.want, 0, v};
          held[cn.slot] = true;
          received += cn.want;
          offset_ = received;
          cn.frame_offset += cn.want;
          cn.frame_left -= cn.want;
          cn.want = 0;
          if (cn.frame_left == 0) cn.state = Conn::kIdle;
          if (ended && received > end_.total_bytes) {
            fail(absl::DataLossError(absl::StrCat("END_STREAM counts ", end_.total_bytes,
                                                  " bytes; ", received, " arrived")));
          }
          break;
        }
        case kPoll:
          poll_inflight = false;
          break;
        case kWrite: {
          write_inflight = false;
          if (!error.ok()) break;
          Piece& pc = pieces[v];
          if (c.res > 0) {
            last_progress = absl::Now();
            pc.written += c.res;
            bytes_written_.fetch_add(c.res, std::memory_order_relaxed);
            if (counter_) counter_->fetch_add(c.res, std::memory_order_relaxed);
            if (pc.written == pc.len) {
              write_offset += pc.len;
              held[v] = false;
              --conns[pc.sock].used;
              free_list[free_count++] = v;
              writing = -1;
            }
          } else if (c.res == -EAGAIN) {
            io_uring_sqe* sqe = ring_->Sqe();
            io_uring_prep_poll_add(sqe, data_fd, POLLOUT);
            io_uring_sqe_set_data64(sqe, uring::Tag(kPoll, 0));
            poll_inflight = true;
          } else if (c.res != -EINTR) {
            fail(ErrnoStatus(absl::StrCat("write(data fd ", data_fd, ", ", pc.len - pc.written,
                                          " bytes at stream offset ", pc.offset + pc.written, ")"),
                             c.res == 0 ? EIO : -c.res));
          }
          break;
        }
      }
    }
  }
  if (!error.ok()) return error;
  result.total_bytes = write_offset;
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
  return ErrnoStatus(absl::StrCat("recv(device stream ", device_, " connection, ", where, ")"),
                     -res);
}

absl::StatusOr<int> StreamReceiver::RunOne(const std::atomic<bool>& cancel) {
  return ring_->RunOne(cancel, options_.idle_timeout, absl::StrCat("device stream ", device_));
}

absl::StatusOr<ReceiveResult> StreamReceiver::ReceiveSplice(int data_fd,
                                                            const std::atomic<bool>& cancel) {
  digest_valid_ = false;
  if (!pipe_read_.valid()) {
    ASSIGN_OR_RETURN(PipeFds p, MakePipe());
    ::fcntl(p.write.get(), F_SETPIPE_SZ,
            options_.pipe_size ? options_.pipe_size : options_.chunk_size);
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
      io_uring_prep_recv(sqe, control_fd(), hdr + got, sizeof(hdr) - got, MSG_WAITALL);
      io_uring_sqe_set_data64(sqe, uring::Tag(kRecvHeader, 0));
      ASSIGN_OR_RETURN(int r, RunOne(cancel));
      if (r == -EINTR || r == -EAGAIN) continue;
      if (r <= 0) return RecvFailure(r, "before END_STREAM");
      got += r;
    }
    ASSIGN_OR_RETURN(FrameHeader h, peer::DecodeHeader(hdr));
    uint32_t left = 0;
    RETURN_IF_ERROR(OnHeader(0, h, &left, &ended, &result));
    while (left > 0) {
      // Drain after every splice in: a pipe's capacity counts buffers, not bytes, and TCP fills
      // buffers with whatever a segment held, so waiting to gather a fixed amount can fill the
      // pipe with less than that and block forever.
      io_uring_sqe* sqe = ring_->Sqe();
      io_uring_prep_splice(sqe, control_fd(), -1, pipe_write_.get(), -1,
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
    return absl::DataLossError(
        absl::StrCat("END_STREAM counts ", end_.total_bytes, " bytes; ", offset_, " arrived"));
  }
  result.total_bytes = offset_;
  return result;
}

absl::Status StreamReceiver::SendCommit(const absl::Status& verdict, absl::Duration linger) {
  peer::PeerStatus st{static_cast<uint32_t>(verdict.code()), std::string(verdict.message())};
  absl::Status sent = net::SendAll(
      control_fd(), peer::EncodeStatusFrame(FrameType::kCommit, next_seq_out_++, device_, st),
      absl::Now() + (verdict.ok() ? options_.idle_timeout : linger));
  if (verdict.ok() || !sent.ok()) return sent;
  // Closing with unread data would reset the connection and could drop the verdict.
  for (const UniqueFd& fd : sockets_) ::shutdown(fd.get(), SHUT_WR);
  const absl::Time until = absl::Now() + linger;
  char sink[64 << 10];
  pollfd p[wire::kMaxStreamsPerDevice];
  size_t open = sockets_.size();
  for (size_t k = 0; k < sockets_.size(); ++k) p[k] = {sockets_[k].get(), POLLIN, 0};
  while (open > 0 && absl::Now() < until) {
    if (::poll(p, sockets_.size(), 50) <= 0) continue;
    for (size_t k = 0; k < sockets_.size(); ++k) {
      if (p[k].fd < 0 || !p[k].revents) continue;
      ssize_t n = ::recv(p[k].fd, sink, sizeof(sink), MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        p[k].fd = -1;  // poll ignores negative fds.
        --open;
      }
    }
  }
  return sent;
}

}  // namespace migmover::stream
