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
#include "transport/io/io_queue_factory.h"
#include "transport/stream/pump_worker.h"
#include "transport/stream/splice_io.h"
#include "transport/stream/stream_errors.h"

namespace migmover::stream {
namespace {

using wire::FrameHeader;
using wire::FrameType;
using wire::Phase;

enum OpKind : uint8_t { kRecvHeader = 1, kRecvPayload = 2, kWrite = 3, kPoll = 4 };

constexpr absl::Duration kTick = absl::Milliseconds(100);

}  // namespace

StreamReceiver::StreamReceiver(io::IoQueue* ring, std::vector<UniqueFd> sockets, uint32_t device,
                               uint64_t next_seq, const StreamOptions& options)
    : ring_(ring),
      sockets_(std::move(sockets)),
      device_(device),
      rules_(device, sockets_.size(), next_seq),
      options_(options),
      digest_(new StreamDigest) {}

StreamReceiver::~StreamReceiver() = default;

absl::StatusOr<std::unique_ptr<StreamReceiver>> StreamReceiver::Create(
    io::IoQueue* ring, UniqueFd socket, uint32_t device, uint64_t next_seq,
    const StreamOptions& options) {
  std::vector<UniqueFd> sockets;
  sockets.push_back(std::move(socket));
  std::unique_ptr<StreamReceiver> r;
  ASSIGN_OR_RETURN(r, Create(ring, std::move(sockets), device, options));
  r->rules_ = IncomingStream(device, 1, next_seq);
  return r;
}

absl::StatusOr<std::unique_ptr<StreamReceiver>> StreamReceiver::Create(
    io::IoQueue* ring, std::vector<UniqueFd> sockets, uint32_t device,
    const StreamOptions& options) {
  if (options.chunk_size == 0 || options.chunk_size > wire::kMaxDataLength || options.buffers < 2) {
    return absl::InvalidArgumentError("receiver: bad chunk size or buffer count");
  }
  if (sockets.empty() || sockets.size() > wire::kMaxStreamsPerDevice) {
    return absl::InvalidArgumentError(
        absl::StrCat("a device stream takes 1..", wire::kMaxStreamsPerDevice, " connections"));
  }
  std::unique_ptr<StreamReceiver> r(
      new StreamReceiver(ring, std::move(sockets), device, 1, options));
  for (const UniqueFd& fd : r->sockets_) {
    RETURN_IF_ERROR(net::TuneDataSocket(fd.get(), options.socket_buffer, options.tcp_congestion));
  }
  return r;
}

DataPath StreamReceiver::PlannedDataPath(int data_fd) const {
  // Striped frames must be put back in order in buffers: splice cannot reorder.
  if (sockets_.size() > 1) return DataPath::kCopy;
  return ResolveDataPath(options_.data_path, data_fd, options_.auto_spliceable);
}

std::string StreamReceiver::transport_name() const {
  return sockets_.size() > 1 ? absl::StrCat("tcp x ", sockets_.size()) : "tcp";
}

absl::StatusOr<ReceiveResult> StreamReceiver::Receive(int data_fd,
                                                      const std::atomic<bool>& cancel) {
  if (ResolveDataPath(options_.data_path, data_fd, options_.auto_spliceable) ==
          DataPath::kSplice &&
      !FdSupportsSplice(data_fd)) {
    return absl::FailedPreconditionError(
        absl::StrCat("--data_path=splice: data fd ", data_fd, " does not support splice"));
  }
  const DataPath path = PlannedDataPath(data_fd);
  path_used_ = path;
  if (path == DataPath::kSplice) return ReceiveSplice(data_fd, cancel);
  return ReceiveCopy(data_fd, cancel);
}

absl::Status StreamReceiver::OnHeader(size_t k, const FrameHeader& h, uint32_t* data_len,
                                      bool* ended, ReceiveResult* result) {
  *data_len = 0;
  ASSIGN_OR_RETURN(IncomingStream::Frame f, rules_.OnHeader(k, h, offset_));
  result->precopy_phases_ended = rules_.precopy_phases_ended();
  if (f.needs_payload) {
    // Control payloads are small and follow their header at once.
    ASSIGN_OR_RETURN(std::string payload, peer::ReadControlPayload(
                                              sockets_[k].get(), h,
                                              absl::Now() + options_.idle_timeout));
    if (f.type == FrameType::kError) return rules_.OnError(h, payload);
    RETURN_IF_ERROR(rules_.OnEndStream(h, payload, offset_).status());
    *ended = true;
  }
  *data_len = f.data_length;
  return absl::OkStatus();
}

// The copy path of a stream's Receive: receives frames on every connection into registered
// buffers, puts the pieces back in stream order, and writes them into the data fd, one write in
// flight at a time. Each connection may hold at most `quota_` buffers, so a connection that runs
// ahead stalls (TCP pushes back) while the one carrying the next piece always has room.
class StreamReceiver::ReceiveJob final : public PumpJob {
 public:
  ReceiveJob(StreamReceiver* r, io::IoQueue* ring, BufferPool* pool,
             std::span<const uint32_t> slots, uint32_t job, int data_fd,
             const std::atomic<bool>& cancel)
      : r_(r),
        ring_(ring),
        pool_(pool),
        job_(job),
        data_fd_(data_fd),
        cancel_(cancel),
        cap_(static_cast<uint32_t>(std::min<size_t>(slots.size(), 64))),
        piece_max_(std::min(pool->payload_size(), r->options_.chunk_size)),
        nsock_(r->sockets_.size()),
        quota_(std::max<uint32_t>(1, cap_ / static_cast<uint32_t>(r->sockets_.size()))) {
    for (uint32_t i = 0; i < cap_; ++i) {
      pool_index_[i] = slots[i];
      free_list_[free_count_++] = i;
    }
  }

  absl::StatusOr<ReceiveResult> Result() const {
    if (!error_.ok()) return error_;
    ReceiveResult result = result_;
    result.total_bytes = write_offset_;
    absl::StatusOr<bool> checked = r_->rules_.CheckComplete(
        write_offset_, r_->digest_valid_ ? std::optional<uint64_t>(r_->digest_->Value())
                                         : std::nullopt);
    if (!checked.ok()) return checked.status();
    result.digest_checked = *checked;
    return result;
  }

  bool Done() const override {
    return aborted_ || (!AnyInflight() && (!error_.ok() || Complete()));
  }

  void Abort(absl::Status why) override {
    if (error_.ok()) error_ = std::move(why);
    aborted_ = true;
  }
  absl::Time WakeBy() const override { return absl::InfiniteFuture(); }

  void Issue() override {
    const bool done = error_.ok() && Complete();
    if (done && !cancel_sent_ && AnyInflight()) {
      // Every byte is in: the other connections' pending receives will never complete.
      CancelOwn();
    }
    for (size_t k = 0; k < nsock_ && error_.ok() && !done; ++k) {
      Conn& cn = conns_[k];
      // After END_STREAM the first connection carries only our COMMIT back.
      if (cn.inflight || (ended_ && k == 0)) continue;
      if (cn.state == Conn::kIdle) {
        cn.state = Conn::kHeader;
        cn.hdr_got = 0;
      }
      if (cn.state == Conn::kHeader) {
        ring_->Recv(r_->sockets_[k].get(), cn.hdr + cn.hdr_got, sizeof(cn.hdr) - cn.hdr_got,
                    MSG_WAITALL, JobTag(kRecvHeader, job_, k));
        cn.inflight = true;
      } else if (cn.state == Conn::kPayload) {
        if (cn.want == 0 && free_count_ > 0 && cn.used < quota_) {
          cn.slot = free_list_[--free_count_];
          ++cn.used;
          cn.got = 0;
          cn.want = std::min(cn.frame_left, piece_max_);
        }
        if (cn.want > 0) {
          ring_->Recv(r_->sockets_[k].get(), pool_->payload(pool_index_[cn.slot]) + cn.got,
                      cn.want - cn.got, MSG_WAITALL, JobTag(kRecvPayload, job_, k));
          cn.inflight = true;
        }
      }
    }
    if (error_.ok() && !write_inflight_ && !poll_inflight_) {
      if (writing_ < 0) {
        // The piece that continues the stream, if it has arrived.
        for (uint32_t i = 0; i < cap_; ++i) {
          if (held_[i] && pieces_[i].offset == write_offset_) {
            writing_ = static_cast<int>(i);
            digest_due_ = true;
            break;
          }
        }
      }
      if (writing_ >= 0) {
        const Piece& pc = pieces_[writing_];
        ring_->Write(data_fd_, pool_->payload(pool_index_[writing_]) + pc.written,
                     pc.len - pc.written, static_cast<int>(pool_index_[writing_]),
                     JobTag(kWrite, job_, writing_));
        write_inflight_ = true;
        if (digest_due_) {
          // Into the device first, the digest meanwhile (both only read the buffer).
          Check(ring_->Submit());
          r_->digest_->Update(pool_->payload(pool_index_[writing_]), pc.len);
          digest_due_ = false;
        }
      } else if (ended_ && received_ == r_->rules_.end().total_bytes &&
                 write_offset_ < received_) {
        // Every byte the source counted has arrived, yet the next one is missing: the frames
        // left a hole (and so overlapped elsewhere).
        Fail(absl::DataLossError(absl::StrCat("device stream ", r_->device_,
                                              ": the striped frames leave a hole at offset ",
                                              write_offset_)));
      }
    }
    if (!AnyInflight() && error_.ok() && !Complete()) {
      // Every connection waits for a buffer that only a missing piece would free: the source
      // left a hole (or overlapped) in the stream.
      Fail(absl::DataLossError(absl::StrCat("device stream ", r_->device_, ": no piece at offset ",
                                            write_offset_, " and no room to receive one")));
    }
  }

  void OnTick() override {
    if (cancel_.load() && error_.ok()) Fail(absl::CancelledError("stream cancelled"));
    if (absl::Now() - last_progress_ > r_->options_.idle_timeout && error_.ok() && !Complete()) {
      Fail(NoProgressError(r_->device_, r_->options_.idle_timeout,
                           write_inflight_ ? "waiting on the data fd" : "waiting on the source"));
    }
  }

  void OnCompletion(const io::Completion& c) override {
    const uint32_t v = SlotOf(c.user_data);
    const bool done = error_.ok() && Complete();
    switch (io::TagKind(c.user_data)) {
      case kRecvHeader:
        conns_[v].inflight = false;
        if (error_.ok() && !done) OnHeaderBytes(v, c.res);
        break;
      case kRecvPayload:
        conns_[v].inflight = false;
        if (error_.ok() && !done) OnPayloadBytes(v, c.res);
        break;
      case kPoll:
        poll_inflight_ = false;
        break;
      case kWrite:
        write_inflight_ = false;
        if (error_.ok()) OnWritten(v, c.res);
        break;
    }
  }

 private:
  // A received piece of stream, waiting to be written in order.
  struct Piece {
    uint64_t offset = 0;
    uint32_t len = 0;
    uint32_t written = 0;
    uint32_t sock = 0;
  };
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

  bool AnyInflight() const {
    if (write_inflight_ || poll_inflight_) return true;
    for (size_t k = 0; k < nsock_; ++k) {
      if (conns_[k].inflight) return true;
    }
    return false;
  }
  bool Complete() const {
    return ended_ && received_ == r_->rules_.end().total_bytes && write_offset_ == received_ &&
           !write_inflight_;
  }
  void CancelOwn() {
    // Only this stream's requests: the ring may carry other streams.
    cancel_sent_ = true;
    for (const UniqueFd& fd : r_->sockets_) Check(ring_->CancelFd(fd.get()));
    Check(ring_->CancelFd(data_fd_));
  }
  // A ring call that failed breaks the ring: the job aborts with it.
  void Check(absl::Status s) {
    if (!s.ok()) Abort(std::move(s));
  }
  void Fail(absl::Status st) {
    if (error_.ok()) error_ = std::move(st);
    if (!cancel_sent_ && AnyInflight()) CancelOwn();
  }

  void OnHeaderBytes(uint32_t k, int32_t res) {
    Conn& cn = conns_[k];
    if (res <= 0) {
      if (res != -EINTR && res != -EAGAIN) Fail(r_->RecvFailure(res, "before END_STREAM"));
      return;
    }
    last_progress_ = absl::Now();
    cn.hdr_got += res;
    if (cn.hdr_got < sizeof(cn.hdr)) return;
    auto h = peer::DecodeHeader(cn.hdr);
    if (!h.ok()) {
      Fail(h.status());
      return;
    }
    uint32_t data_len = 0;
    if (absl::Status s = r_->OnHeader(k, *h, &data_len, &ended_, &result_); !s.ok()) {
      Fail(s);
      return;
    }
    if (data_len > 0) {
      if (h->offset < write_offset_) {
        Fail(absl::DataLossError(absl::StrCat("device stream ", r_->device_, ": DATA at offset ",
                                              h->offset, " overlaps bytes already written")));
        return;
      }
      cn.state = Conn::kPayload;
      cn.frame_left = data_len;
      cn.frame_offset = h->offset;
      cn.want = 0;
    } else {
      cn.state = Conn::kIdle;
    }

  }

  void OnPayloadBytes(uint32_t k, int32_t res) {
    Conn& cn = conns_[k];
    if (res <= 0) {
      if (res != -EINTR && res != -EAGAIN) Fail(r_->RecvFailure(res, "inside a DATA frame"));
      return;
    }
    last_progress_ = absl::Now();
    cn.got += res;
    if (cn.got < cn.want) return;
    for (uint32_t i = 0; i < cap_; ++i) {
      if (held_[i] && pieces_[i].offset == cn.frame_offset) {
        Fail(absl::DataLossError(absl::StrCat("device stream ", r_->device_,
                                              ": two DATA frames at offset ", cn.frame_offset)));
        return;
      }
    }
    pieces_[cn.slot] = Piece{cn.frame_offset, cn.want, 0, k};
    held_[cn.slot] = true;
    received_ += cn.want;
    r_->offset_ = received_;
    cn.frame_offset += cn.want;
    cn.frame_left -= cn.want;
    cn.want = 0;
    if (cn.frame_left == 0) cn.state = Conn::kIdle;
    if (ended_ && received_ > r_->rules_.end().total_bytes) {
      Fail(EndStreamTotalError(r_->rules_.end().total_bytes, received_));
    }
  }

  void OnWritten(uint32_t slot, int32_t res) {
    Piece& pc = pieces_[slot];
    if (res > 0) {
      last_progress_ = absl::Now();
      pc.written += res;
      r_->bytes_written_.fetch_add(res, std::memory_order_relaxed);
      if (r_->counter_) r_->counter_->fetch_add(res, std::memory_order_relaxed);
      if (pc.written == pc.len) {
        write_offset_ += pc.len;
        held_[slot] = false;
        --conns_[pc.sock].used;
        free_list_[free_count_++] = slot;
        writing_ = -1;
      }
    } else if (res == -EAGAIN) {
      ring_->Poll(data_fd_, POLLOUT, JobTag(kPoll, job_, 0));
      poll_inflight_ = true;
    } else if (res != -EINTR) {
      Fail(ErrnoStatus(absl::StrCat("write(data fd ", data_fd_, ", ", pc.len - pc.written,
                                    " bytes at stream offset ", pc.offset + pc.written, ")"),
                       res == 0 ? EIO : -res));
    }
  }

  StreamReceiver* const r_;
  io::IoQueue* const ring_;
  BufferPool* const pool_;
  const uint32_t job_;
  const int data_fd_;
  const std::atomic<bool>& cancel_;
  const uint32_t cap_;
  const uint32_t piece_max_;
  const size_t nsock_;
  const uint32_t quota_;

  uint32_t pool_index_[64];  // This job's slot -> buffer in the pool.
  Piece pieces_[64];
  bool held_[64] = {};  // pieces_[slot] holds received bytes not yet written.
  uint32_t free_list_[64];
  uint32_t free_count_ = 0;
  Conn conns_[wire::kMaxStreamsPerDevice];

  ReceiveResult result_;
  absl::Status error_;
  bool write_inflight_ = false, poll_inflight_ = false, ended_ = false, cancel_sent_ = false;
  bool aborted_ = false;  // The ring broke: nothing in flight will complete.
  int writing_ = -1;           // The slot being written.
  bool digest_due_ = false;    // writing_'s bytes are not in the digest yet.
  uint64_t write_offset_ = 0;  // Stream bytes written to the data fd.
  uint64_t received_ = 0;      // Stream bytes received.
  absl::Time last_progress_ = absl::Now();
};

uint32_t StreamReceiver::CopyJobSlots() const {
  // Two buffers per connection (one filling while an earlier one is written), if the worker
  // can spare them; with fewer, each connection still gets one.
  const uint32_t want = std::min<uint32_t>(
      64, std::max(options_.buffers, 2 * static_cast<uint32_t>(sockets_.size())));
  return worker_ != nullptr ? std::max<uint32_t>(1, std::min(want, worker_buffers_)) : want;
}

absl::StatusOr<ReceiveResult> StreamReceiver::ReceiveCopy(int data_fd,
                                                          const std::atomic<bool>& cancel) {
  if (worker_ != nullptr) {
    absl::StatusOr<std::unique_ptr<PumpJob>> job = worker_->RunJob(
        CopyJobSlots(),
        [&](io::IoQueue* ring, BufferPool* pool, std::span<const uint32_t> slots,
            uint32_t id) -> std::unique_ptr<PumpJob> {
          return std::make_unique<ReceiveJob>(this, ring, pool, slots, id, data_fd, cancel);
        });
    if (!job.ok()) return job.status();
    return static_cast<const ReceiveJob&>(**job).Result();
  }
  if (ring_ == nullptr) {
    ASSIGN_OR_RETURN(own_ring_, io::CreateIoQueue(options_.io_engine, 64));
    ring_ = own_ring_.get();
  }
  if (pool_ == nullptr) {
    ASSIGN_OR_RETURN(pool_, BufferPool::Create(ring_, CopyJobSlots(), options_.chunk_size,
                                               wire::kFrameHeaderSize));
  }
  ReceiveJob job(this, ring_, pool_.get(), pool_->all(), 0, data_fd, cancel);
  DriveJob(ring_, job);
  return job.Result();
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
  const int sock = control_fd();
  SpliceWaits waits(cancel, options_.idle_timeout, device_);
  ReceiveResult result;
  bool ended = false;
  while (!ended) {
    uint8_t hdr[wire::kFrameHeaderSize];
    uint32_t got = 0;
    while (got < sizeof(hdr)) {
      ssize_t r = ::recv(sock, hdr + got, sizeof(hdr) - got, MSG_DONTWAIT);
      if (r > 0) {
        got += r;
        waits.Progressed();
        continue;
      }
      if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
        RETURN_IF_ERROR(waits.StillWaiting("waiting on the source"));
        WaitFd(sock, POLLIN, kTick);
        continue;
      }
      return RecvFailure(r == 0 ? 0 : -errno, "before END_STREAM");
    }
    ASSIGN_OR_RETURN(FrameHeader h, peer::DecodeHeader(hdr));
    uint32_t left = 0;
    RETURN_IF_ERROR(OnHeader(0, h, &left, &ended, &result));
    while (left > 0) {
      // Drain after every splice in: a pipe's capacity counts buffers, not bytes, and TCP fills
      // buffers with whatever a segment held, so waiting to gather a fixed amount can fill the
      // pipe with less than that and block forever.
      const ssize_t in = SpliceOnce(sock, pipe_write_.get(), std::min<uint32_t>(left, pipe_cap));
      if (in == -EAGAIN || in == -EINTR) {
        RETURN_IF_ERROR(waits.StillWaiting("waiting on the source"));
        WaitFd(sock, POLLIN, kTick);
        continue;
      }
      if (in <= 0) return RecvFailure(static_cast<int>(in), "inside a DATA frame");
      waits.Progressed();
      uint32_t out = 0;
      while (out < static_cast<uint32_t>(in)) {
        const ssize_t r = SpliceOnce(pipe_read_.get(), data_fd, in - out);
        if (r == -EAGAIN || r == -EINTR) {
          RETURN_IF_ERROR(waits.StillWaiting("waiting on the data fd"));
          WaitFd(data_fd, POLLOUT, kTick);
          continue;
        }
        if (r <= 0) {
          return ErrnoStatus(absl::StrCat("splice(pipe -> data fd ", data_fd, ", ", in - out,
                                          " bytes at stream offset ", offset_ + out, ")"),
                             r == 0 ? EIO : static_cast<int>(-r));
        }
        out += r;
        waits.Progressed();
        bytes_written_.fetch_add(r, std::memory_order_relaxed);
        if (counter_) counter_->fetch_add(r, std::memory_order_relaxed);
      }
      offset_ += in;
      left -= in;
    }
  }
  RETURN_IF_ERROR(rules_.CheckComplete(offset_, std::nullopt).status());
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
