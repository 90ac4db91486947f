#include "transport/stream/splice_receive.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "transport/base/errno_status.h"
#include "transport/base/status_macros.h"
#include "transport/net/socket.h"
#include "transport/peer/frame_codec.h"
#include "transport/stream/stream_errors.h"

namespace migmover::stream {
namespace {

using transport::ReceiveResult;

enum OpKind : uint8_t { kWait = 6 };
// Pieces moved per Issue() before the worker's other jobs get a turn.
constexpr int kPiecesPerTurn = 8;
// How much of a DATA payload must be readable before a wait for it ends (SO_RCVLOWAT). Each
// wake-up costs a context switch, a poll and a splice of whatever one segment brought; on these
// machines the count of wake-ups, not the bytes, set the splice path's cost: 256 KiB took the
// one-stream splice bench from 0.64 to 0.82-0.85 of the raw pair (bench/README.md).
constexpr uint32_t kPayloadWakeMark = 256u << 10;
// When no byte came for this long (a capped or stalled source), the mark drops to one byte at
// the next tick: what did come is taken as it comes.
constexpr absl::Duration kTricklePatience = absl::Milliseconds(20);

class SpliceReceiveJobImpl final : public SpliceReceiveJob {
 public:
  SpliceReceiveJobImpl(ReceiveStream* s, SplicePipe* pipe, io::IoQueue* queue, uint32_t job,
                       int data_fd, const std::atomic<bool>& cancel)
      : s_(s),
        pipe_(pipe),
        data_fd_(data_fd),
        sock_(s->control_fd()),
        tcp_(net::IsTcp(sock_)),
        cancel_(cancel),
        wait_(queue, JobTag(kWait, job, 0)),
        pipe_cap_(std::max(::fcntl(pipe->write.get(), F_GETPIPE_SZ), 4096)),
        // With a fixed socket buffer the kernel cannot grow it to hold the mark (a mark the
        // buffer cannot hold never wakes); a quarter of it always fits.
        wake_mark_(s->options.socket_buffer > 0
                       ? std::min<uint32_t>(kPayloadWakeMark, s->options.socket_buffer / 4)
                       : kPayloadWakeMark) {
    s_->digest_valid = false;
  }

  absl::StatusOr<ReceiveResult> Result() const override {
    if (!error_.ok()) return error_;
    ReceiveResult result = result_;
    result.aead = s_->aead;  // Spliced: TLS is the only check (the data path asks for it).
    return result;
  }

  bool Done() const override { return aborted_ || (ended_ && !wait_.waiting()); }
  void Abort(absl::Status why) override {
    if (error_.ok()) error_ = std::move(why);
    ended_ = aborted_ = true;
  }
  absl::Time WakeBy() const override {
    return yielded_ ? absl::InfinitePast() : absl::InfiniteFuture();
  }

  void Issue() override {
    yielded_ = false;
    for (int pieces = 0; !ended_ && !wait_.waiting();) {
      if (pieces >= kPiecesPerTurn) {
        // Bounded work per turn, headers included (a peer sending empty frames fast must not
        // keep the worker from its other streams and from ticks).
        yielded_ = true;
        return;
      }
      if (state_ == kHeader) {
        if (!ReceiveHeader()) return;
        ++pieces;
      }
      if (state_ == kIn && !SpliceIn()) return;
      if (state_ == kOut) {
        if (!SpliceOut()) return;
        ++pieces;
      }
    }
  }

  void OnCompletion(const io::Completion& c) override {
    wait_.Ended();
    woke_readable_ = c.res > 0 && (c.res & POLLIN);
  }

  void OnTick() override {
    if (ended_) return;
    MaybeAck(/*tick=*/true);
    const absl::Duration idle = absl::Now() - last_progress_;
    if (cancel_.load()) {
      Fail(absl::CancelledError("stream cancelled"));
    } else if (idle > s_->options.idle_timeout) {
      Fail(NoProgressError(s_->device, s_->options.idle_timeout,
                           state_ == kOut ? "waiting on the data fd" : "waiting on the source"));
    } else if (idle >= kTricklePatience) {
      // Ends a wait on whatever already arrived (the kernel rechecks readiness at once).
      SetWakeMark(1);
    }
  }

 private:
  enum State { kHeader, kIn, kOut };
  static constexpr int kMaxEmptyWakes = 64;

  void Check(absl::Status st) {
    if (!st.ok()) Abort(std::move(st));
  }
  void Fail(absl::Status st) {
    if (error_.ok()) error_ = std::move(st);
    ended_ = true;
    Check(wait_.Withdraw());
    if (wake_mark_set_ != 1) {
      const int one = 1;  // Whoever reads the connection next (a verdict) waits for any byte.
      (void)::setsockopt(sock_, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one));
      wake_mark_set_ = 1;
    }
  }

  // The next header, checked; END_STREAM completes the stream. False to wait or when ended.
  bool ReceiveHeader() {
    woke_readable_ = false;  // Only a wait of SpliceIn's own counts there.
    while (hdr_got_ < sizeof(hdr_)) {
      const ssize_t r = ::recv(sock_, hdr_ + hdr_got_, sizeof(hdr_) - hdr_got_, MSG_DONTWAIT);
      if (r > 0) {
        hdr_got_ += r;
        last_progress_ = absl::Now();
      } else if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
        // A header may be all the source sends for a while (END_STREAM, a keepalive).
        if (!SetWakeMark(1)) return false;
        wait_.Start(sock_, POLLIN);
        return false;
      } else {
        Fail(s_->RecvFailure(r == 0 ? 0 : -errno, "before END_STREAM"));
        return false;
      }
    }
    hdr_got_ = 0;
    absl::StatusOr<wire::FrameHeader> h = peer::DecodeHeader(hdr_);
    if (!h.ok()) {
      Fail(h.status());
      return false;
    }
    bool ended = false;
    // A control frame's payload is read with a blocking poll, which honours the mark: back to
    // one byte first (it is at most a few bytes of a frame, and nothing else may follow).
    if (h->type != static_cast<uint8_t>(wire::FrameType::kData) && !SetWakeMark(1)) return false;
    if (absl::Status st = s_->OnHeader(0, *h, &left_, &ended, &result_); !st.ok()) {
      Fail(st);
      return false;
    }
    if (ended) {
      absl::Status complete = s_->rules.CheckComplete(s_->offset, std::nullopt).status();
      if (!complete.ok()) {
        Fail(complete);
      } else {
        result_.total_bytes = s_->offset;
        ended_ = true;  // The mark is one byte already: AwaitConfirm's reads see every frame.
      }
      return false;
    }
    if (left_ > 0) state_ = kIn;
    return true;
  }

  // Connection -> pipe: the next piece of the payload. Drained after every splice in: a pipe's
  // capacity counts buffers, not bytes, and TCP fills buffers with whatever a segment held, so
  // gathering a fixed amount first could fill the pipe with less than that and stall.
  bool SpliceIn() {
    const ssize_t in =
        SpliceOnce(sock_, pipe_->write.get(), std::min<uint32_t>(left_, pipe_cap_));
    if (in == -EAGAIN && woke_readable_ && (tcp_ || ++empty_wakes_ > kMaxEmptyWakes)) {
      // Readable, yet splice takes nothing: on TCP, urgent data, which splice never passes and
      // poll always reports. Waiting again would spin until the idle timeout.
      Fail(absl::DataLossError(absl::StrCat(
          "device stream ", s_->device, ": the connection is readable but splice moves nothing",
          tcp_ ? " (TCP urgent data inside a DATA frame?)"
               : absl::StrCat(", ", kMaxEmptyWakes, " wakes in a row"))));
      return false;
    }
    if (in > 0) empty_wakes_ = 0;
    woke_readable_ = false;
    if (in == -EAGAIN || in == -EINTR) {
      // The source owes `left_` more bytes; wake when a good part of them is here. A source
      // that sends them slowly is met by OnTick.
      if (!SetWakeMark(std::min(left_, wake_mark_))) return false;
      wait_.Start(sock_, POLLIN);
      return false;
    }
    if (in <= 0) {
      Fail(s_->RecvFailure(static_cast<int>(in), "inside a DATA frame"));
      return false;
    }
    last_progress_ = absl::Now();
    piece_ = static_cast<uint32_t>(in);
    out_ = 0;
    state_ = kOut;
    return true;
  }

  // Pipe -> data fd: the piece, into the device.
  bool SpliceOut() {
    while (out_ < piece_) {
      const ssize_t r = SpliceOnce(pipe_->read.get(), data_fd_, piece_ - out_);
      if (r == -EAGAIN || r == -EINTR) {
        wait_.Start(data_fd_, POLLOUT);
        return false;
      }
      if (r <= 0) {
        Fail(DeviceSideError(ErrnoStatus(absl::StrCat("splice(pipe -> data fd ", data_fd_, ", ", piece_ - out_,
                                      " bytes at stream offset ", s_->offset + out_, ")"),
                         r == 0 ? EIO : static_cast<int>(-r))));
        return false;
      }
      out_ += r;
      last_progress_ = absl::Now();
      s_->Written(static_cast<uint32_t>(r));
    }
    s_->offset += piece_;
    left_ -= piece_;
    state_ = left_ > 0 ? kIn : kHeader;
    MaybeAck(/*tick=*/false);
    return true;
  }

  // Tells the source how far the device has got, as the copy path does (every `ack_every`
  // bytes written and on a tick): a source that keeps a replay buffer frees it by these. An ACK
  // the socket cannot take now waits for the next tick; one it took in part is finished at once,
  // so the next frame (the verdict) starts where a frame starts.
  void MaybeAck(bool tick) {
    if (ended_ || s_->options.ack_every == 0 || s_->offset <= s_->acked) return;
    if (!tick && s_->offset - s_->acked < s_->options.ack_every) return;
    const std::string frame = peer::SealVerdict(
        peer::EncodeAck(s_->next_out_seq, s_->device, s_->offset), s_->rules.control_key());
    const ssize_t n = ::send(sock_, frame.data(), frame.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n <= 0) return;  // Full, or broken: the receive sees why.
    ++s_->next_out_seq;
    s_->acked = s_->offset;
    if (static_cast<size_t>(n) < frame.size()) {
      absl::Status rest = net::SendAll(sock_, absl::string_view(frame).substr(n),
                                       absl::Now() + absl::Seconds(1));
      if (!rest.ok()) Fail(ConnectionLostError(rest));
    }
  }

  // SO_RCVLOWAT of the connection, set only when it changes. False when the call failed (the
  // job failed with it).
  bool SetWakeMark(uint32_t bytes) {
    if (bytes == wake_mark_set_) return true;
    const int v = static_cast<int>(bytes);
    if (::setsockopt(sock_, SOL_SOCKET, SO_RCVLOWAT, &v, sizeof(v)) != 0) {
      Fail(ErrnoStatus(absl::StrCat("setsockopt(peer socket fd ", sock_, ", SO_RCVLOWAT, ", v, ")"),
                       errno));
      return false;
    }
    wake_mark_set_ = bytes;
    return true;
  }

  ReceiveStream* const s_;
  SplicePipe* const pipe_;
  const int data_fd_;
  const int sock_;
  // Urgent data exists only on TCP. The unix end of a userspace TLS relay can report readable
  // while splice still finds nothing (seen once in CI under load): waited out, within a bound.
  const bool tcp_;
  const std::atomic<bool>& cancel_;
  ReadinessWait wait_;  // At most one in flight.
  const uint32_t pipe_cap_;
  const uint32_t wake_mark_;
  uint32_t wake_mark_set_ = 1;  // The socket's default.

  State state_ = kHeader;
  uint8_t hdr_[wire::kFrameHeaderSize];
  uint32_t hdr_got_ = 0;
  uint32_t left_ = 0;  // DATA payload bytes of the current frame still to come.
  uint32_t piece_ = 0, out_ = 0;
  ReceiveResult result_;
  absl::Status error_;
  bool ended_ = false, aborted_ = false, yielded_ = false;
  bool woke_readable_ = false;  // The last wait ended with the connection readable.
  int empty_wakes_ = 0;         // Readable wakes in a row after which splice moved nothing.
  absl::Time last_progress_ = absl::Now();
};

}  // namespace

std::unique_ptr<SpliceReceiveJob> SpliceReceiveJob::Create(ReceiveStream* stream,
                                                           SplicePipe* pipe, io::IoQueue* queue,
                                                           uint32_t job, int data_fd,
                                                           const std::atomic<bool>& cancel) {
  return std::make_unique<SpliceReceiveJobImpl>(stream, pipe, queue, job, data_fd, cancel);
}

}  // namespace migmover::stream
