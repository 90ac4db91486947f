#include "transport/stream/splice_send.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "transport/base/errno_status.h"
#include "transport/base/status_macros.h"
#include "transport/peer/frame_codec.h"
#include "transport/peer/handshake.h"
#include "transport/stream/stream_errors.h"

namespace migmover::stream {
namespace {

using transport::PumpResult;
using wire::Phase;

enum OpKind : uint8_t { kWait = 6 };
// Frames moved per Issue() before the worker's other jobs get a turn.
constexpr int kFramesPerTurn = 4;

class SpliceSendJobImpl final : public SpliceSendJob {
 public:
  SpliceSendJobImpl(SendStream* s, SplicePipe* pipe, io::IoQueue* queue, uint32_t job,
                    int data_fd, Phase phase, uint64_t max_bytes, const std::atomic<bool>& stop,
                    const std::atomic<bool>& cancel)
      : s_(s),
        pipe_(pipe),
        data_fd_(data_fd),
        phase_(phase),
        stop_(stop),
        cancel_(cancel),
        wait_(queue, JobTag(kWait, job, 0)),
        // Splice cannot tell an empty pipe from a drained device; the fd's own mode can: only
        // a nonblocking data fd says "nothing more for now" with EAGAIN (as read(2) would).
        data_fd_nonblocking_((::fcntl(data_fd, F_GETFL) & O_NONBLOCK) != 0),
        remaining_(max_bytes) {}

  absl::StatusOr<PumpResult> Result() const override {
    if (!error_.ok()) return error_;
    return result_;
  }
  bool unsupported() const override { return unsupported_; }

  bool Done() const override { return aborted_ || (ended_ && !wait_.waiting()); }
  void Abort(absl::Status why) override {
    if (error_.ok()) error_ = std::move(why);
    ended_ = aborted_ = true;
  }
  absl::Time WakeBy() const override {
    if (yielded_) return absl::InfinitePast();
    return send_not_before_ > absl::Now() ? send_not_before_ : absl::InfiniteFuture();
  }

  void Issue() override {
    yielded_ = false;
    if (ended_ || wait_.waiting()) return;
    for (int frames = 0; !ended_ && !wait_.waiting();) {
      if (state_ == kFill) {
        if (frames == kFramesPerTurn) {
          yielded_ = true;
          return;
        }
        if (!Fill()) return;
      }
      if (state_ == kHeader && !SendHeader()) return;
      if (state_ == kBody) {
        if (!SendBody()) return;
        ++frames;
      }
    }
  }

  void OnCompletion(const io::Completion&) override { wait_.Ended(); }

  void OnTick() override {
    if (ended_) return;
    if (cancel_.load()) {
      // A frame once begun is finished first (within kFinishFrame), so the stream stays framed
      // for the ERROR that tells the destination why; Fill stops at the next frame.
      // Numbered is begun: its sequence number is spent, whether or not a byte went out yet.
      const bool begun = numbered_ || state_ == kBody;
      if (begun && finish_by_ == absl::InfiniteFuture()) finish_by_ = absl::Now() + kFinishFrame;
      if (!begun || absl::Now() > finish_by_) {
        Fail(absl::CancelledError("stream cancelled"));
        return;
      }
    }
    // Switchover must not wait for PRE_COPY data that may never come; only between frames (a
    // frame once begun is always finished).
    if (stop_.load() && state_ == kFill) Check(wait_.Withdraw());
    // The destination only speaks mid-stream to give up; while the job waits on the data fd
    // nothing else would notice.
    if (absl::Status v = s_->PeerVerdict(SendStream::kPeerFramesPerTurn); !v.ok()) {
      Fail(v);
      return;
    }
    if (send_not_before_ > last_progress_) {
      last_progress_ = std::min(absl::Now(), send_not_before_);
    }
    if (absl::Now() - last_progress_ > s_->options.idle_timeout) {
      Fail(NoProgressError(s_->device, s_->options.idle_timeout,
                           state_ == kFill ? "waiting on the data fd" : "waiting on the peer"));
    }
  }

 private:
  enum State { kFill, kHeader, kBody };

  void Check(absl::Status st) {
    if (!st.ok()) Abort(std::move(st));
  }
  void End(PumpResult::End why) {
    result_.end = why;
    ended_ = true;
  }
  void Fail(absl::Status st) {
    if (error_.ok()) error_ = std::move(st);
    ended_ = true;
    Check(wait_.Withdraw());
  }
  // A failed send: the destination's verdict if it gave one, else the call's error.
  void FailSend(absl::Status call) {
    absl::Status v = s_->PeerVerdict(SendStream::kPeerFramesPerTurn);
    Fail(v.ok() ? std::move(call) : std::move(v));
  }

  // Data fd -> pipe: the next frame's payload. False when the job must wait or ended.
  bool Fill() {
    if (cancel_.load()) {
      Fail(absl::CancelledError("stream cancelled"));
      return false;
    }
    if (remaining_ == 0) {
      End(PumpResult::End::kBudget);
      return false;
    }
    if (stop_.load()) {
      End(PumpResult::End::kStopped);
      return false;
    }
    const uint32_t len =
        static_cast<uint32_t>(std::min<uint64_t>(s_->options.chunk_size, remaining_));
    const ssize_t got = SpliceOnce(data_fd_, pipe_->write.get(), len);
    const bool precopy = phase_ == Phase::kPreCopy;
    if (got == -EINVAL && !tried_) {
      unsupported_ = true;
      ended_ = true;
      return false;
    }
    tried_ = true;
    if (got == 0 || (precopy && (got == -ENOMSG || (got == -EAGAIN && data_fd_nonblocking_)))) {
      End(precopy ? PumpResult::End::kDrained : PumpResult::End::kEof);
      return false;
    }
    if (got == -EAGAIN || got == -EINTR) {
      wait_.Start(data_fd_, POLLIN);
      return false;
    }
    if (got < 0) {
      Fail(ErrnoStatus(absl::StrCat("splice(data fd ", data_fd_, " -> pipe, ", len, ", ",
                                    peer::PhaseName(phase_), ")"),
                       static_cast<int>(-got)));
      return false;
    }
    last_progress_ = absl::Now();
    s_->path_used = DataPath::kSplice;
    s_->digest_valid = false;  // These bytes never pass through userspace.
    frame_len_ = static_cast<uint32_t>(got);
    if (s_->options.limiter) {
      send_not_before_ =
          absl::Now() + s_->options.limiter->Reserve(wire::kFrameHeaderSize + frame_len_);
    }
    sock_index_ = s_->next_socket;
    s_->next_socket = (sock_index_ + 1) % s_->sockets.size();
    hdr_sent_ = 0;
    moved_ = 0;
    state_ = kHeader;
    return true;
  }

  // The frame's header, kept with its payload by MSG_MORE.
  bool SendHeader() {
    if (absl::Now() < send_not_before_) return false;  // The bandwidth cap: WakeBy() says when.
    const int sock = s_->sockets[sock_index_].get();
    if (hdr_sent_ == 0 && !numbered_) {
      // Numbered only now, as it goes: a frame numbered and then never sent (a cancel while
      // the bandwidth cap held it) would leave a hole in the sequence before the ERROR.
      peer::EncodeHeader(s_->out.Data(sock_index_, phase_, frame_len_, s_->offset), hdr_);
      s_->framed = s_->offset + frame_len_;
      numbered_ = true;
    }
    while (hdr_sent_ < sizeof(hdr_)) {
      const ssize_t sent = ::send(sock, hdr_ + hdr_sent_, sizeof(hdr_) - hdr_sent_,
                                  MSG_NOSIGNAL | MSG_MORE | MSG_DONTWAIT);
      if (sent > 0) {
        hdr_sent_ += sent;
        last_progress_ = absl::Now();
      } else if (sent < 0 && (errno == EAGAIN || errno == EINTR)) {
        wait_.Start(sock, POLLOUT);
        return false;
      } else {
        FailSend(ErrnoStatus(absl::StrCat("send(peer socket fd ", sock, ", DATA header)"),
                             sent == 0 ? EPIPE : errno));
        return false;
      }
    }
    state_ = kBody;
    return true;
  }

  // Pipe -> connection: the payload. True once the whole frame is out.
  bool SendBody() {
    const int sock = s_->sockets[sock_index_].get();
    while (moved_ < frame_len_) {
      const ssize_t out = SpliceOnce(pipe_->read.get(), sock, frame_len_ - moved_);
      if (out > 0) {
        moved_ += out;
        last_progress_ = absl::Now();
      } else if (out == -EAGAIN || out == -EINTR) {
        if (absl::Status v = s_->PeerVerdict(SendStream::kPeerFramesPerTurn); !v.ok()) {
          Fail(v);
        } else {
          wait_.Start(sock, POLLOUT);
        }
        return false;
      } else {
        FailSend(ErrnoStatus(
            absl::StrCat("splice(pipe -> peer socket fd ", sock, ", ", frame_len_ - moved_, ")"),
            out == 0 ? EPIPE : static_cast<int>(-out)));
        return false;
      }
    }
    if (absl::Status v = s_->PeerVerdict(SendStream::kPeerFramesPerTurn); !v.ok()) {
      Fail(v);
      return false;
    }
    s_->Sent(frame_len_);
    remaining_ -= frame_len_;
    result_.bytes += frame_len_;
    state_ = kFill;
    numbered_ = false;
    return true;
  }

  SendStream* const s_;
  SplicePipe* const pipe_;
  const int data_fd_;
  const Phase phase_;
  const std::atomic<bool>& stop_;
  const std::atomic<bool>& cancel_;
  ReadinessWait wait_;  // At most one in flight.
  const bool data_fd_nonblocking_;

  // How long a cancelled job may take to finish the frame it began.
  static constexpr absl::Duration kFinishFrame = absl::Seconds(1);

  State state_ = kFill;
  bool numbered_ = false;  // hdr_ holds the current frame's numbered header.
  absl::Time finish_by_ = absl::InfiniteFuture();
  uint64_t remaining_;
  uint8_t hdr_[wire::kFrameHeaderSize];
  uint32_t hdr_sent_ = 0, frame_len_ = 0, moved_ = 0;
  size_t sock_index_ = 0;
  PumpResult result_;
  absl::Status error_;
  bool ended_ = false, aborted_ = false, unsupported_ = false, tried_ = false;
  bool yielded_ = false;
  absl::Time last_progress_ = absl::Now();
  absl::Time send_not_before_ = absl::InfinitePast();
};

}  // namespace

std::unique_ptr<SpliceSendJob> SpliceSendJob::Create(SendStream* stream, SplicePipe* pipe,
                                                     io::IoQueue* queue, uint32_t job,
                                                     int data_fd, Phase phase, uint64_t max_bytes,
                                                     const std::atomic<bool>& stop,
                                                     const std::atomic<bool>& cancel) {
  return std::make_unique<SpliceSendJobImpl>(stream, pipe, queue, job, data_fd, phase, max_bytes,
                                             stop, cancel);
}

}  // namespace migmover::stream
