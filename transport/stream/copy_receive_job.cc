#include "transport/stream/copy_receive_job.h"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "transport/base/errno_status.h"
#include "transport/net/socket.h"
#include "transport/peer/frame_codec.h"
#include "transport/stream/stream_errors.h"

namespace migmover::stream {
namespace {

using transport::ReceiveResult;
using wire::FrameHeader;

enum OpKind : uint8_t { kRecvHeader = 1, kRecvPayload = 2, kWrite = 3, kPoll = 4, kAck = 5 };

// The copy path of a stream's Receive: receives frames on every connection into registered
// buffers, puts the pieces back in stream order, and writes them into the data fd, one write in
// flight at a time. Each connection may hold at most `quota_` buffers, so a connection that runs
// ahead stalls (TCP pushes back) while the one carrying the next piece always has room.
class CopyReceiveJobImpl final : public CopyReceiveJob {
 public:
  CopyReceiveJobImpl(ReceiveStream* r, io::IoQueue* ring, BufferPool* pool,
             std::span<const uint32_t> slots, uint32_t job, int data_fd,
             const std::atomic<bool>& cancel)
      : r_(r),
        ring_(ring),
        pool_(pool),
        job_(job),
        data_fd_(data_fd),
        cancel_(cancel),
        cap_(static_cast<uint32_t>(std::min<size_t>(slots.size(), 64))),
        piece_max_(std::min(pool->payload_size(), r->options.chunk_size)),
        nsock_(r->sockets.size()),
        quota_(std::max<uint32_t>(1, cap_ / static_cast<uint32_t>(r->sockets.size()))) {
    for (uint32_t i = 0; i < cap_; ++i) {
      pool_index_[i] = slots[i];
      free_list_[free_count_++] = i;
    }
    // A stream that resumed goes on from what the earlier receives wrote.
    write_offset_ = received_ = r_->offset = r_->written;
    r_->resumable = false;
  }

  absl::StatusOr<ReceiveResult> Result() const override {
    if (!error_.ok()) return error_;
    ReceiveResult result = result_;
    result.total_bytes = write_offset_;
    absl::StatusOr<bool> checked = r_->rules.CheckComplete(
        write_offset_, r_->digest_valid && r_->mac != nullptr
                           ? r_->mac->Finish()
                           : std::nullopt);
    if (!checked.ok()) return checked.status();
    result.digest_checked = *checked;
    result.aead = r_->aead;
    return result;
  }

  bool Done() const override {
    return aborted_ || (!AnyInflight() && (!error_.ok() || Complete()));
  }

  void Abort(absl::Status why) override {
    if (error_.ok() || lost_) error_ = std::move(why);
    aborted_ = true;
    lost_ = false;
    r_->resumable = false;
  }
  absl::Time WakeBy() const override { return absl::InfiniteFuture(); }

  void Issue() override {
    const bool done = error_.ok() && Complete();
    // An ACK on its way is let go (a cancelled one could leave half a frame); the receives
    // still waiting on the connections are withdrawn.
    if (done && !cancel_sent_ && AnyInflight() && !ack_inflight_) {
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
        ring_->Recv(r_->sockets[k].get(), cn.hdr + cn.hdr_got, sizeof(cn.hdr) - cn.hdr_got,
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
          ring_->Recv(r_->sockets[k].get(), pool_->payload(pool_index_[cn.slot]) + cn.got,
                      cn.want - cn.got, MSG_WAITALL, JobTag(kRecvPayload, job_, k));
          cn.inflight = true;
        }
      }
    }
    // After a lost connection only the piece already going into the device is finished: the
    // digest has taken all of it.
    if ((error_.ok() || (lost_ && writing_ >= 0)) && !write_inflight_ && !poll_inflight_) {
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
                     pc.len - pc.written, pool_->buffer_index(pool_index_[writing_]),
                     JobTag(kWrite, job_, writing_));
        write_inflight_ = true;
        if (digest_due_) {
          // Into the device first, the digest meanwhile (both only read the buffer).
          Check(ring_->Submit());
          if (r_->mac != nullptr) r_->mac->Update(pool_->payload(pool_index_[writing_]), pc.len);
          digest_due_ = false;
        }
      } else if (error_.ok() && ended_ && received_ == r_->rules.end().total_bytes &&
                 write_offset_ < received_) {
        // Every byte the source counted has arrived, yet the next one is missing: the frames
        // left a hole (and so overlapped elsewhere).
        Fail(absl::DataLossError(absl::StrCat("device stream ", r_->device,
                                              ": the striped frames leave a hole at offset ",
                                              write_offset_)));
      }
    }
    if (!AnyInflight() && error_.ok() && !Complete()) {
      // Every connection waits for a buffer that only a missing piece would free: the source
      // left a hole (or overlapped) in the stream.
      Fail(absl::DataLossError(absl::StrCat("device stream ", r_->device, ": no piece at offset ",
                                            write_offset_, " and no room to receive one")));
    }
  }

  void OnTick() override {
    if (cancel_.load() && error_.ok()) Fail(absl::CancelledError("stream cancelled"));
    // After a lost connection the piece going into the device is finished, but not forever: a
    // cancel, or a device that takes nothing for the idle timeout, ends the stream for good (and
    // withdraws the write).
    if (lost_ && cancel_.load()) Fail(absl::CancelledError("stream cancelled"));
    if (lost_ && absl::Now() - last_progress_ > r_->options.idle_timeout) {
      Fail(NoProgressError(r_->device, r_->options.idle_timeout,
                           "finishing a piece into the data fd after the connection was lost"));
    }
    MaybeAck(/*tick=*/true);
    // A half-sent ACK that the failing stream finishes, to a source that does not read: cut.
    if (!error_.ok() && ack_inflight_ && !ack_cut_ && absl::Now() - last_progress_ > kFinishAck) {
      ack_cut_ = true;
      Check(ring_->CancelFd(r_->control_fd()));
    }
    if (absl::Now() - last_progress_ > r_->options.idle_timeout && error_.ok() && !Complete()) {
      Fail(NoProgressError(r_->device, r_->options.idle_timeout,
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
        if (error_.ok() || lost_) OnWritten(v, c.res);
        break;
      case kAck:
        ack_inflight_ = false;
        OnAckSent(c.res);
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
    if (write_inflight_ || poll_inflight_ || ack_inflight_) return true;
    for (size_t k = 0; k < nsock_; ++k) {
      if (conns_[k].inflight) return true;
    }
    return false;
  }
  bool Complete() const {
    return ended_ && received_ == r_->rules.end().total_bytes && write_offset_ == received_ &&
           !write_inflight_;
  }
  void CancelOwn() {
    // Only this stream's requests: the ring may carry other streams.
    cancel_sent_ = true;
    for (size_t k = 0; k < r_->sockets.size(); ++k) {
      if (k == 0 && ack_inflight_ && !lost_) {
        // An ACK going out is finished (OnTick bounds it), or the verdict that follows would
        // land in the middle of it: only the first connection's receive is withdrawn.
        Check(ring_->Cancel(JobTag(kRecvHeader, job_, 0)));
        Check(ring_->Cancel(JobTag(kRecvPayload, job_, 0)));
        continue;
      }
      Check(ring_->CancelFd(r_->sockets[k].get()));
    }
    Check(ring_->CancelFd(data_fd_));
  }
  // A ring call that failed breaks the ring: the job aborts with it.
  void Check(absl::Status s) {
    if (!s.ok()) Abort(std::move(s));
  }
  // Any failure but a lost connection ends the stream for good (and after one, this one wins:
  // the stream can no longer resume).
  void Fail(absl::Status st) {
    if (error_.ok() || lost_) error_ = std::move(st);
    lost_ = false;
    r_->resumable = false;
    if (!cancel_sent_ && AnyInflight()) CancelOwn();
  }

  // A connection broke (the source closed it, a reset, a timeout): stop receiving, finish the
  // piece going into the device, and end with the stream resumable from what is written. The
  // pieces received after it are dropped; a resumed source sends them again.
  // A receive on connection `k` that returned `res` (0 or an error) ended it: a reset or a
  // silence is a lost connection; the source closing in order (its FIN) is its own doing, never
  // resumed.
  void Ended(uint32_t k, int32_t res, absl::Status st) {
    if (res == 0 && net::PeerClosedInOrder(r_->sockets[k].get())) {
      Fail(std::move(st));
    } else {
      Lose(std::move(st));
    }
  }
  void Lose(absl::Status st) {
    if (!error_.ok()) return;
    error_ = ConnectionLostError(std::move(st));
    lost_ = true;
    r_->resumable = true;
    if (!sockets_cancelled_) {
      sockets_cancelled_ = true;
      for (size_t k = 0; k < r_->sockets.size(); ++k) {
        if (k == 0 && ack_inflight_) {
          // As in CancelOwn: an ACK going out is finished (or cut by OnTick), so a verdict on a
          // first connection that still works never lands inside it.
          Check(ring_->Cancel(JobTag(kRecvHeader, job_, 0)));
          Check(ring_->Cancel(JobTag(kRecvPayload, job_, 0)));
          continue;
        }
        Check(ring_->CancelFd(r_->sockets[k].get()));
      }
    }
  }

  void OnHeaderBytes(uint32_t k, int32_t res) {
    Conn& cn = conns_[k];
    if (res <= 0) {
      if (res != -EINTR && res != -EAGAIN) Ended(k, res, r_->RecvFailure(res, "before END_STREAM"));
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
        Fail(absl::DataLossError(absl::StrCat("device stream ", r_->device, ": DATA at offset ",
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
      if (res != -EINTR && res != -EAGAIN) {
        Ended(k, res, r_->RecvFailure(res, "inside a DATA frame"));
      }
      return;
    }
    last_progress_ = absl::Now();
    cn.got += res;
    if (cn.got < cn.want) return;
    for (uint32_t i = 0; i < cap_; ++i) {
      if (held_[i] && pieces_[i].offset == cn.frame_offset) {
        Fail(absl::DataLossError(absl::StrCat("device stream ", r_->device,
                                              ": two DATA frames at offset ", cn.frame_offset)));
        return;
      }
    }
    pieces_[cn.slot] = Piece{cn.frame_offset, cn.want, 0, k};
    held_[cn.slot] = true;
    received_ += cn.want;
    r_->offset = received_;
    cn.frame_offset += cn.want;
    cn.frame_left -= cn.want;
    cn.want = 0;
    if (cn.frame_left == 0) cn.state = Conn::kIdle;
    if (ended_ && received_ > r_->rules.end().total_bytes) {
      Fail(EndStreamTotalError(r_->rules.end().total_bytes, received_));
    }
  }

  void OnWritten(uint32_t slot, int32_t res) {
    Piece& pc = pieces_[slot];
    if (res > 0) {
      last_progress_ = absl::Now();
      pc.written += res;
      r_->Written(res);
      if (pc.written == pc.len) {
        write_offset_ += pc.len;
        r_->written = write_offset_;
        held_[slot] = false;
        --conns_[pc.sock].used;
        free_list_[free_count_++] = slot;
        writing_ = -1;
        MaybeAck(/*tick=*/false);
      }
    } else if (res == -EAGAIN) {
      ring_->Poll(data_fd_, POLLOUT, JobTag(kPoll, job_, 0));
      poll_inflight_ = true;
    } else if (res != -EINTR) {
      Fail(DeviceSideError(ErrnoStatus(
          absl::StrCat("write(data fd ", data_fd_, ", ", pc.len - pc.written,
                       " bytes at stream offset ", pc.offset + pc.written, ")"),
          res == 0 ? EIO : -res)));
    }
  }

  // Tells the source how far the device has got (an ACK on the first connection), each
  // `ack_every` bytes and on a tick, one ACK in flight at a time. None after END_STREAM: the
  // COMMIT says it all.
  void MaybeAck(bool tick) {
    if (!error_.ok() || ack_inflight_ || ended_ || write_offset_ <= r_->acked) return;
    if (r_->options.ack_every == 0) return;
    if (!tick && write_offset_ - r_->acked < r_->options.ack_every) return;
    const std::string frame = peer::SealVerdict(
        peer::EncodeAck(r_->next_out_seq, r_->device, write_offset_), r_->rules.control_key());
    static_assert(sizeof(ack_frame_) == wire::kFrameHeaderSize + wire::kVerdictSealSize);
    std::memcpy(ack_frame_, frame.data(), sizeof(ack_frame_));
    ++r_->next_out_seq;
    ack_offset_ = write_offset_;
    ack_sent_ = 0;
    SendAck();
  }
  void SendAck() {
    ring_->Send(r_->control_fd(), ack_frame_ + ack_sent_, sizeof(ack_frame_) - ack_sent_,
                MSG_NOSIGNAL, JobTag(kAck, job_, 0));
    ack_inflight_ = true;
  }
  void OnAckSent(int32_t res) {
    if (res > 0) ack_sent_ += res;
    if (ack_sent_ == sizeof(ack_frame_)) {
      r_->acked = ack_offset_;
      return;
    }
    if (res == -ECANCELED || (!error_.ok() && ack_sent_ == 0)) {
      // Withdrawn before a byte left: its number goes to the next frame (the verdict).
      if (ack_sent_ == 0) --r_->next_out_seq;
      return;
    }
    if (res > 0 || res == -EAGAIN || res == -EINTR) {
      SendAck();
      return;
    }
    if (ack_sent_ == 0) --r_->next_out_seq;
    // The connection is gone (a resume numbers its new ones afresh).
    Lose(ErrnoStatus(absl::StrCat("send(peer socket fd ", r_->control_fd(), ", ACK ", ack_offset_,
                                  ")"),
                     res == 0 ? EPIPE : -res));
  }

  ReceiveStream* const r_;
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
  uint8_t ack_frame_[wire::kFrameHeaderSize + wire::kVerdictSealSize];
  uint32_t ack_sent_ = 0;
  uint64_t ack_offset_ = 0;
  bool ack_inflight_ = false;
  bool lost_ = false;  // Ended by a lost connection (Lose): resumable unless it fails after.
  bool ack_cut_ = false;
  static constexpr absl::Duration kFinishAck = absl::Seconds(1);
  bool sockets_cancelled_ = false;
  absl::Time last_progress_ = absl::Now();
};

}  // namespace

std::unique_ptr<CopyReceiveJob> CopyReceiveJob::Create(ReceiveStream* stream, io::IoQueue* queue,
                                                       BufferPool* pool,
                                                       std::span<const uint32_t> slots,
                                                       uint32_t job, int data_fd,
                                                       const std::atomic<bool>& cancel) {
  return std::make_unique<CopyReceiveJobImpl>(stream, queue, pool, slots, job, data_fd, cancel);
}

uint32_t CopyReceiveJob::SlotsWanted(const ReceiveStream& stream, uint32_t cap) {
  const uint32_t want = std::min<uint32_t>(
      64, std::max(stream.options.buffers, 2 * static_cast<uint32_t>(stream.sockets.size())));
  return std::max<uint32_t>(1, std::min(want, cap));
}

}  // namespace migmover::stream
