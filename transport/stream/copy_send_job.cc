#include "transport/stream/copy_send_job.h"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "transport/base/errno_status.h"
#include "transport/peer/frame_codec.h"
#include "transport/peer/handshake.h"
#include "transport/stream/stream_errors.h"

namespace migmover::stream {
namespace {

using transport::PumpResult;
using wire::Phase;

enum OpKind : uint8_t { kRead = 1, kPoll = 2, kSend = 3, kPeer = 5 };

// The copy path of one Pump (or PumpStreamFd) call: reads the data fd into the stream's buffers
// (registered with the queue where the stream has its own) and sends each as a DATA frame on a
// free connection, with one read in flight (a data fd is a stream) and one frame in flight per
// connection (each connection's frames stay in stream order).
class CopySendJobImpl final : public CopySendJob {
 public:
  CopySendJobImpl(SendStream* s, io::IoQueue* ring, BufferPool* pool,
                  std::span<const uint32_t> slots, uint32_t job, int data_fd, Phase phase,
                  uint64_t max_bytes, const std::atomic<bool>& stop,
                  const std::atomic<bool>& cancel, std::optional<StreamFd> stream_fd)
      : s_(s),
        ring_(ring),
        pool_(pool),
        job_(job),
        data_fd_(data_fd),
        phase_(phase),
        stop_(stop),
        cancel_(cancel),
        cap_(static_cast<uint32_t>(std::min<size_t>(slots.size(), kMaxSlots))),
        nsock_(s->sockets.size()),
        remaining_(max_bytes),
        // With a replay buffer every byte read is kept, sent or not: reading goes on after it.
        read_offset_(s->replay.enabled() ? s->read : s->offset),
        stream_fd_(stream_fd.has_value()),
        idle_return_(stream_fd ? stream_fd->idle_return : absl::InfiniteDuration()),
        phase_bytes_(stream_fd ? stream_fd->phase_bytes : nullptr) {
    // Sized once per pump, never per frame.
    pool_index_.resize(cap_);
    slots_.resize(cap_);
    free_list_.resize(cap_);
    ready_.resize(cap_);
    uint32_t max_index = 0;
    for (uint32_t i = 0; i < cap_; ++i) max_index = std::max(max_index, slots[i]);
    job_slot_.assign(cap_ > 0 ? max_index + 1 : 0, -1);
    for (uint32_t i = 0; i < cap_; ++i) {
      pool_index_[i] = slots[i];
      job_slot_[slots[i]] = static_cast<int32_t>(i);
      if (s->replay.Holds(slots[i])) {
        // An earlier pump's frame, not yet acknowledged: kept until an ACK covers it. Nothing
        // of this pump reads it (an ACK never covers a frame that did not go out).
        slots_[i].sent_all = true;
        slots_[i].held = true;
        continue;
      }
      free_list_[free_count_++] = i;
    }
    for (size_t k = 0; k < nsock_; ++k) sending_[k] = -1;
    if (s->replay_from != SendStream::kNoReplay) {
      // A resumed stream: first the held frames the destination lacks, from where it said
      // (the first one from the middle), on the new connections; then new reads after the last
      // byte read.
      const uint64_t from = s->replay_from;
      s->replay_from = SendStream::kNoReplay;
      read_offset_ = s->read;
      s->replay.ForEach([&](const ReplayBuffer::Frame& f) {
        const int32_t j = f.slot < job_slot_.size() ? job_slot_[f.slot] : -1;
        if (j < 0 || f.offset + f.len <= from) return;
        Slot& sl = slots_[j];
        sl = Slot{f.len, 0, f.offset, 0, 0, false};
        sl.phase = f.phase;
        sl.held = true;
        // Sent again only if it went out before (it entered the digest then): a frame read
        // but never handed out is simply sent now.
        sl.replay = f.digested;
        sl.digested = f.digested;
        sl.counted = f.counted;
        sl.skip = f.offset < from ? static_cast<uint32_t>(from - f.offset) : 0;
        ready_[(ready_head_ + ready_count_++) % cap_] = static_cast<uint32_t>(j);
      });
    }
  }

  absl::StatusOr<PumpResult> Result() const override {
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
    // ACKs read between pumps (by a keepalive) may cover frames this pump found held.
    ReleaseAcked();
    // The destination speaks mid-stream to acknowledge or to give up. The ring watches its
    // connection, so noticing costs nothing per frame.
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
      } else if (idle_yield_) {
        ended_ = true;
        result_.end = PumpResult::End::kIdle;
      } else if (stream_fd_ && fd_drained_ && free_count_ > 0 && ReplayRoom()) {
        // Wait for the VMM's next piece with a poll, not a read: a read left waiting across the
        // agent's Switchover would take bytes written after it into PRE_COPY.
        ring_->Poll(data_fd_, POLLIN, JobTag(kPoll, job_, 0));
        poll_inflight_ = true;
        poll_cancel_sent_ = false;
      } else if (free_count_ > 0 && ReplayRoom()) {
        const uint32_t slot = free_list_[--free_count_];
        const uint32_t len =
            static_cast<uint32_t>(std::min<uint64_t>(s_->options.chunk_size, remaining_));
        read_len_ = len;
        read_tag_ = JobTag(kRead, job_, slot);
        ring_->Read(data_fd_, pool_->payload(pool_index_[slot]), len,
                    pool_->buffer_index(pool_index_[slot]), read_tag_);
        read_inflight_ = true;
        read_cancel_sent_ = false;
      }
    }
    // Hand ready frames, in stream order, to free connections.
    // Once cancelled, no frame begins (those begun are finished).
    while (ready_count_ > 0 && error_.ok() && !cancel_.load() && sends_inflight_ < nsock_) {
      const uint32_t slot = ready_[ready_head_];
      Slot& sl = slots_[slot];
      if (s_->options.limiter && !head_reserved_) {
        send_not_before_ =
            absl::Now() + s_->options.limiter->Reserve(wire::kFrameHeaderSize + sl.len);
        head_reserved_ = true;
      }
      if (absl::Now() < send_not_before_) break;
      size_t k = s_->next_socket;
      while (sending_[k] >= 0) k = (k + 1) % nsock_;
      s_->next_socket = (k + 1) % nsock_;
      head_reserved_ = false;
      ready_head_ = (ready_head_ + 1) % cap_;
      --ready_count_;
      sl.sock = static_cast<uint32_t>(k);
      // A frame sent again from its middle carries its header over bytes the destination has.
      uint8_t* frame = pool_->base(pool_index_[slot]) + sl.skip;
      peer::EncodeHeader(s_->out.Data(k, sl.phase, sl.len - sl.skip, sl.offset + sl.skip),
                         std::span<uint8_t, wire::kFrameHeaderSize>(frame, wire::kFrameHeaderSize));
      s_->framed = std::max(s_->framed, sl.offset + sl.len);
      SubmitSend(slot, s_->sockets[k].get(), sl.skip, wire::kFrameHeaderSize + sl.len - sl.skip);
      sending_[k] = static_cast<int>(slot);
      ++sends_inflight_;
      // The frame leaves first and the digest reads it meanwhile (the kernel only reads the
      // buffer too): the digest is off the path from the data fd to the peer.
      Check(ring_->Submit());
      // Each frame enters the digest at its first hand-off (in stream order, as hand-offs are),
      // never again when it is sent again after a resume: the digest covers the stream once.
      if (!sl.digested) {
        if (s_->mac != nullptr) s_->mac->Update(pool_->payload(pool_index_[slot]), sl.len);
        sl.digested = true;
        if (sl.held) s_->replay.MarkDigested(pool_index_[slot]);
      }
    }
    if (Drained() && peer_poll_inflight_ && !peer_cancel_sent_) {
      Check(ring_->Cancel(JobTag(kPeer, job_, 0)));
      peer_cancel_sent_ = true;
    }
  }

  void OnTick() override {
    // Also a job that ended (stopped, drained, budget) with frames still going out to a peer
    // that may not read: a cancel bounds them too, and frames not begun never will be.
    if (cancel_.load() && error_.ok()) Fail(absl::CancelledError("stream cancelled"));
    if (absl::Now() > finish_by_) CutSends();
    // Switchover must not wait on a PRE_COPY read that the driver cannot satisfy (a precopy
    // estimate that overshot): withdraw it. Only the read: a send must never be cut.
    if (stop_.load() && phase_ == Phase::kPreCopy && read_inflight_ && !read_cancel_sent_) {
      Check(ring_->Cancel(read_tag_));
      read_cancel_sent_ = true;
    }
    if (stop_.load() && stream_fd_ && poll_inflight_ && !poll_cancel_sent_) {
      Check(ring_->Cancel(JobTag(kPoll, job_, 0)));
      poll_cancel_sent_ = true;
    }
    // A VMM's stream that pauses: once every frame is out, hand the thread back to the caller
    // (its keepalives) by withdrawing the wait on the fd.
    if (stream_fd_ && !idle_yield_ && !ended_ && ready_count_ == 0 && sends_inflight_ == 0 &&
        absl::Now() - last_read_ > idle_return_) {
      if (read_inflight_ && !read_cancel_sent_) {
        Check(ring_->Cancel(read_tag_));
        read_cancel_sent_ = true;
        idle_yield_ = true;
      } else if (poll_inflight_ && !poll_cancel_sent_) {
        Check(ring_->Cancel(JobTag(kPoll, job_, 0)));
        poll_cancel_sent_ = true;
        idle_yield_ = true;
      }
    }
    if (send_not_before_ > last_progress_) {
      last_progress_ = std::min(absl::Now(), send_not_before_);
    }
    // A stream fd's pause is the VMM's, not a stall: only the peer's counts.
    // Frames read and not acknowledged that fill the replay buffer wait on the peer too.
    const bool frames_waiting = ready_count_ > 0 || sends_inflight_ > 0 || !ReplayRoom();
    const bool waiting_on_vmm = stream_fd_ && !frames_waiting;
    if (!waiting_on_vmm && absl::Now() - last_progress_ > s_->options.idle_timeout &&
        error_.ok() && !ended_) {
      const bool on_fd = read_inflight_ && !(stream_fd_ && frames_waiting);
      absl::Status stalled =
          NoProgressError(s_->device, s_->options.idle_timeout,
                          on_fd ? "waiting on the data fd" : "waiting on the peer");
      Fail(on_fd ? stalled : ConnectionLostError(stalled));
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
        fd_drained_ = false;  // Readable, hung up or failed: the read says which.
        break;
      case kSend:
        OnSend(slot, c);
        break;
      case kPeer:
        peer_poll_inflight_ = false;
        // Readable (or hung up) while frames still go out: read why, and stop.
        if (c.res > 0 && !ended_) {
          absl::Status v = s_->PeerVerdict(SendStream::kPeerFramesPerTurn);
          if (!v.ok()) Fail(v);
          ReleaseAcked();
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
    bool held = false;  // In the replay buffer: reused only once acknowledged.
    bool replay = false;    // Sent again after a resume.
    bool digested = false;  // Its bytes are in the stream's digest already.
    bool counted = false;   // Its bytes are in the progress counters already.
    uint32_t skip = 0;     // Sent again from this far into the payload.
    Phase phase = Phase::kPreCopy;  // The phase it was read in (a resend keeps it).
  };

  // Whether the replay buffer can take one more frame (every frame read is held until its ACK).
  // When it cannot, the stream waits for the destination's next ACK (the peer poll wakes the
  // job).
  bool ReplayRoom() const {
    return !s_->replay.enabled() || s_->replay.frames() < s_->replay.capacity();
  }

  // The kernel is done with `slot`'s frame: its buffer goes back, or waits for its ACK.
  void Recycle(uint32_t slot) {
    if (slots_[slot].held) {
      ReleaseAcked();
    } else {
      free_list_[free_count_++] = slot;
    }
  }

  // Every held frame the destination's last ACK covers, and whose send is complete, frees its
  // buffer (in stream order).
  void ReleaseAcked() {
    if (!s_->replay.enabled()) return;
    const uint32_t n = s_->replay.Release(
        s_->acked.load(std::memory_order_relaxed), [&](uint32_t pool_slot) {
          const int32_t j = pool_slot < job_slot_.size() ? job_slot_[pool_slot] : -1;
          if (j < 0) return true;  // Not this pump's buffer: nothing here to give back.
          Slot& h = slots_[j];
          if (!h.sent_all || h.notifs != 0) return false;
          h.held = false;
          free_list_[free_count_++] = static_cast<uint32_t>(j);
          return true;
        });
    if (n > 0) s_->replay_held.store(s_->replay.bytes(), std::memory_order_relaxed);
  }

  void SubmitSend(uint32_t slot, int fd, uint32_t from, uint32_t len) {
    uint8_t* base = pool_->base(pool_index_[slot]);
    if (s_->options.send_zc) {
      ring_->SendZeroCopy(fd, base + from, len, MSG_NOSIGNAL,
                          pool_->buffer_index(pool_index_[slot]),
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
    if (!cancel_sent_) {
      // Only this job's requests: the ring may carry other streams. Frames already going out
      // are finished (within kFinishFrame, OnTick), so the stream stays framed for the ERROR
      // that tells the destination why; a send that fails ends on its own.
      cancel_sent_ = true;
      if (finish_by_ == absl::InfiniteFuture()) finish_by_ = absl::Now() + kFinishFrame;
      if (read_inflight_ || poll_inflight_) Check(ring_->CancelFd(data_fd_));
      if (peer_poll_inflight_) Check(ring_->Cancel(JobTag(kPeer, job_, 0)));
    }
  }

  // After Fail: frames not finished by then are cut.
  void CutSends() {
    if (sends_cut_ || (sends_inflight_ == 0 && notifs_outstanding_ == 0)) return;
    sends_cut_ = true;
    for (const UniqueFd& fd : s_->sockets) Check(ring_->CancelFd(fd.get()));
  }

  void OnRead(uint32_t slot, int32_t res) {
    read_inflight_ = false;
    if (res > 0) {
      last_progress_ = absl::Now();
      last_read_ = last_progress_;
      // In PRE_COPY every read waits behind a poll (one on a readable fd completes at once): a
      // read left waiting across Switchover would take bytes written after it.
      fd_drained_ =
          stream_fd_ && (phase_ == Phase::kPreCopy || static_cast<uint32_t>(res) < read_len_);
      slots_[slot] = Slot{static_cast<uint32_t>(res), 0, read_offset_, 0, 0, false};
      slots_[slot].phase = phase_;
      // Kept from the moment it is read until an ACK covers it: the data fd cannot give these
      // bytes again, and the send may fail before or while they go out. Reads are in stream
      // order, so the replay buffer is too; ReplayRoom() left a place for it.
      if (s_->replay.enabled()) {
        slots_[slot].held = s_->replay.Hold(pool_index_[slot], read_offset_, res, phase_);
        s_->replay_held.store(s_->replay.bytes(), std::memory_order_relaxed);
      }
      read_offset_ += res;
      s_->read = read_offset_;
      remaining_ -= res;
      result_.bytes += res;
      ready_[(ready_head_ + ready_count_++) % cap_] = slot;
      return;
    }
    free_list_[free_count_++] = slot;
    if (ended_) return;  // Cancelled read.
    if (res == -ECANCELED && read_cancel_sent_) {
      ended_ = true;
      result_.end = idle_yield_ && !stop_.load() ? PumpResult::End::kIdle
                                                 : PumpResult::End::kStopped;
      return;
    }
    if (stream_fd_) {
      // A pipe or socket: 0 is its writer's end, EAGAIN (a nonblocking fd) "not yet".
      if (res == 0) {
        ended_ = true;
        result_.end = PumpResult::End::kEof;
      } else if (res == -EAGAIN || res == -EINTR) {
        fd_drained_ = true;  // Issue() decides: end (stop, idle) or poll for the next piece.
      } else {
        Fail(ErrnoStatus(
            absl::StrCat("read(data fd ", data_fd_, ", ", peer::PhaseName(phase_), ")"), -res));
      }
      return;
    }
    const bool precopy = phase_ == Phase::kPreCopy;
    if (res == 0 || (precopy && (res == -ENOMSG || res == -EAGAIN))) {
      ended_ = true;
      result_.end = precopy ? PumpResult::End::kDrained : PumpResult::End::kEof;
    } else if (res == -EAGAIN) {
      ring_->Poll(data_fd_, POLLIN, JobTag(kPoll, job_, 0));
      poll_inflight_ = true;
      poll_cancel_sent_ = false;
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
      if (sl.notifs == 0 && sl.sent_all) Recycle(slot);
      return;
    }
    if (c.flags & io::kCompletionMore) {
      ++sl.notifs;
      ++notifs_outstanding_;
    }
    const int fd = s_->sockets[sl.sock].get();
    const uint32_t total = wire::kFrameHeaderSize + sl.len - sl.skip;
    if (c.res > 0) {
      last_progress_ = absl::Now();
      sl.sent += c.res;
    }
    const bool retry = c.res == -EAGAIN || c.res == -EINTR;
    if (!sends_cut_ && (c.res > 0 || retry) && sl.sent < total) {
      // A short send: the rest of this frame goes next on the same connection.
      SubmitSend(slot, fd, sl.skip + sl.sent, total - sl.sent);
      return;
    }
    sending_[sl.sock] = -1;
    --sends_inflight_;
    if (c.res > 0 && sl.sent == total) {
      if (!sl.counted) {
        s_->bytes_sent.fetch_add(sl.len, std::memory_order_relaxed);
        if (s_->counter) s_->counter->fetch_add(sl.len, std::memory_order_relaxed);
        if (phase_bytes_) phase_bytes_->fetch_add(sl.len, std::memory_order_relaxed);
        sl.counted = true;
        if (sl.held) s_->replay.MarkCounted(pool_index_[slot]);
      }
      if (sl.replay) {
        s_->replayed_bytes.fetch_add(sl.len - sl.skip, std::memory_order_relaxed);
      }
      s_->offset += sl.len - sl.skip;
      sl.sent_all = true;
      if (sl.notifs == 0) Recycle(slot);
    } else if (error_.ok()) {
      absl::Status v = s_->PeerVerdict(SendStream::kPeerFramesPerTurn);
      Fail(!v.ok() ? v
                   : ConnectionLostError(
                         ErrnoStatus(absl::StrCat("send(peer socket fd ", fd, ", DATA)"),
                                     c.res == 0 ? EPIPE : -c.res)));
    }
  }

  static constexpr absl::Duration kFinishFrame = absl::Seconds(1);
  absl::Time finish_by_ = absl::InfiniteFuture();
  bool sends_cut_ = false;

  SendStream* const s_;
  io::IoQueue* const ring_;
  BufferPool* const pool_;
  const uint32_t job_;
  const int data_fd_;
  const Phase phase_;
  const std::atomic<bool>& stop_;
  const std::atomic<bool>& cancel_;
  const uint32_t cap_;
  const size_t nsock_;

  // Rings of slot indices, sized at construction; no allocation per chunk.
  static constexpr size_t kMaxSlots = 1u << 16;
  std::vector<uint32_t> pool_index_;  // This job's slot -> buffer in the pool.
  std::vector<int32_t> job_slot_;     // Buffer in the pool -> this job's slot, or -1.
  std::vector<Slot> slots_;
  std::vector<uint32_t> free_list_, ready_;
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
  const bool stream_fd_;             // A VMM's pipe or socket (PumpStreamFd).
  const absl::Duration idle_return_;  // stream_fd_: end (kIdle) after this long without data.
  std::atomic<uint64_t>* const phase_bytes_;  // Live count of what this job sent, or null.
  absl::Time last_read_ = absl::Now();
  bool idle_yield_ = false;  // The wait on the fd was withdrawn: end with kIdle.
  bool fd_drained_ = true;   // stream_fd_: the last read took all there was: poll first.
  bool poll_cancel_sent_ = false;
  uint32_t read_len_ = 0;
};

}  // namespace

std::unique_ptr<CopySendJob> CopySendJob::Create(SendStream* stream, io::IoQueue* queue,
                                                 BufferPool* pool, std::span<const uint32_t> slots,
                                                 uint32_t job, int data_fd, Phase phase,
                                                 uint64_t max_bytes, const std::atomic<bool>& stop,
                                                 const std::atomic<bool>& cancel,
                                                 std::optional<StreamFd> stream_fd) {
  return std::make_unique<CopySendJobImpl>(stream, queue, pool, slots, job, data_fd, phase,
                                           max_bytes, stop, cancel, stream_fd);
}

uint32_t CopySendJob::SlotsWanted(const SendStream& stream, uint32_t cap) {
  // The frames in flight, and as many again as the replay buffer may hold.
  const uint32_t want =
      std::min<uint32_t>(64, std::max<uint32_t>(stream.options.buffers,
                                                static_cast<uint32_t>(stream.sockets.size()) + 2)) +
      stream.replay.capacity();
  return std::max<uint32_t>(2, std::min(want, cap));
}

}  // namespace migmover::stream
