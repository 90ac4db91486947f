#include "transport/tcp/resuming_sender.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "transport/base/status_macros.h"
#include "transport/stream/stream_errors.h"

namespace migmover::transport {

ResumingSender::ResumingSender(std::unique_ptr<stream::StreamSender> inner, peer::Hello hello,
                               Connect connect, absl::Duration window)
    : inner_(std::move(inner)),
      hello_(std::move(hello)),
      connect_(std::move(connect)),
      window_(window),
      security_(inner_->security()) {}

bool ResumingSender::Mendable(const absl::Status& s) const {
  // After the destination's COMMIT(0) nothing is resumed: its receive is over.
  return !s.ok() && stream::IsConnectionLost(s) && window_ > absl::ZeroDuration() &&
         inner_->replays() && !committed_;
}

absl::Status ResumingSender::ResumeAndFlush(const absl::Status& lost) {
  RETURN_IF_ERROR(Resume(lost, cancel_));
  // The held frames go now: whatever comes next (END_STREAM above all) follows every byte.
  static const std::atomic<bool> kNever{false};
  return inner_->FlushReplay(cancel_ != nullptr ? *cancel_ : kNever).status();
}

absl::StatusOr<PumpResult> ResumingSender::Pump(int data_fd, wire::Phase phase,
                                                uint64_t max_bytes,
                                                const std::atomic<bool>& stop,
                                                const std::atomic<bool>& cancel) {
  cancel_ = &cancel;
  while (true) {
    absl::StatusOr<PumpResult> r = inner_->Pump(data_fd, phase, max_bytes, stop, cancel);
    if (r.ok() || !Mendable(r.status())) return r;
    RETURN_IF_ERROR(Resume(r.status(), &cancel));
  }
}

absl::StatusOr<PumpResult> ResumingSender::PumpStreamFd(int data_fd, wire::Phase phase,
                                                        absl::Duration idle_return,
                                                        std::atomic<uint64_t>* phase_bytes,
                                                        const std::atomic<bool>& stop,
                                                        const std::atomic<bool>& cancel) {
  cancel_ = &cancel;
  while (true) {
    absl::StatusOr<PumpResult> r =
        inner_->PumpStreamFd(data_fd, phase, idle_return, phase_bytes, stop, cancel);
    if (r.ok() || !Mendable(r.status())) return r;
    RETURN_IF_ERROR(Resume(r.status(), &cancel));
  }
}

// The marks are recorded before they go: a resume says them again, so the call is done.
absl::Status ResumingSender::EndPhase(wire::Phase phase) {
  absl::Status s = inner_->EndPhase(phase);
  return Mendable(s) ? ResumeAndFlush(s) : s;
}

absl::Status ResumingSender::MarkInitialDataSent() {
  absl::Status s = inner_->MarkInitialDataSent();
  return Mendable(s) ? ResumeAndFlush(s) : s;
}

// The resume itself tells the destination the source is alive.
absl::Status ResumingSender::Keepalive() {
  absl::Status s = inner_->Keepalive();
  return Mendable(s) ? ResumeAndFlush(s) : s;
}

absl::Status ResumingSender::EndStream() {
  while (true) {
    absl::Status s = inner_->EndStream();
    if (!Mendable(s)) return s;
    // Every byte again before END_STREAM: on one connection nothing of the stream follows it.
    RETURN_IF_ERROR(ResumeAndFlush(s));
  }
}

absl::Status ResumingSender::AwaitCommit(absl::Duration timeout,
                                         const std::atomic<bool>& cancel) {
  cancel_ = &cancel;
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    absl::Status s = inner_->AwaitCommit(std::max(deadline - absl::Now(), absl::ZeroDuration()),
                                         cancel);
    if (s.ok()) committed_ = true;
    if (!Mendable(s)) return s;
    // The destination resumes only a receive that had not ended: then END_STREAM did not
    // arrive whole, and goes again after the bytes it lacks.
    RETURN_IF_ERROR(ResumeAndFlush(s));
    RETURN_IF_ERROR(inner_->EndStream());
  }
}

std::string ResumingSender::security() const {
  absl::MutexLock l(&security_mu_);
  return security_;
}

ResumeStats ResumingSender::resume_stats() const {
  ResumeStats r;
  r.reconnections = reconnections_.load(std::memory_order_relaxed);
  r.time_lost = absl::Nanoseconds(lost_ns_.load(std::memory_order_relaxed));
  r.replayed_bytes = inner_->replayed_bytes();
  return r;
}

absl::Status ResumingSender::TryResume(absl::Time deadline, uint64_t* offset) {
  // A connect sent into a dead link retries its SYN only after 1, 2, 4 ... s: a fresh attempt
  // each second meets the link soon after it is back. The HELLO's answer may take longer (the
  // destination answers once its receive has ended): it gets the rest of the window.
  ASSIGN_OR_RETURN(Connections c, connect_(std::min(deadline, absl::Now() + kConnectAttempt)));
  const std::string security = c.security;
  RETURN_IF_ERROR(inner_->Reconnect(std::move(c.fds)));
  inner_->set_channel_bindings(std::move(c.bindings));
  inner_->set_security(security);
  {
    absl::MutexLock l(&security_mu_);
    security_ = security;
  }
  peer::Hello hello = hello_;
  hello.resume = ++resume_number_;
  RETURN_IF_ERROR(inner_->Handshake(hello, deadline - absl::Now(), offset));
  return inner_->ReplayFrom(*offset);
}

absl::Status ResumingSender::Resume(const absl::Status& lost, const std::atomic<bool>* cancel) {
  const absl::Time start = absl::Now();
  const absl::Time deadline = start + window_;
  Log(absl::StrCat("connection lost at stream offset ", inner_->bytes_sent(), " (",
                   lost.message(), "); reconnecting for up to ", absl::FormatDuration(window_)));
  absl::Duration pause = absl::Milliseconds(50);
  absl::Status last;
  int attempts = 0;
  while (true) {
    if (cancel != nullptr && cancel->load()) {
      lost_ns_.fetch_add(absl::ToInt64Nanoseconds(absl::Now() - start),
                         std::memory_order_relaxed);
      return absl::CancelledError("stream cancelled while reconnecting");
    }
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) break;
    ++attempts;
    uint64_t offset = 0;
    last = TryResume(deadline, &offset);
    if (last.ok()) {
      const absl::Duration took = absl::Now() - start;
      reconnections_.fetch_add(1, std::memory_order_relaxed);
      lost_ns_.fetch_add(absl::ToInt64Nanoseconds(took), std::memory_order_relaxed);
      Log(absl::StrCat("resumed (resume ", resume_number_, ", attempt ", attempts, ") after ",
                       absl::FormatDuration(took), ": the destination has ", offset,
                       " bytes, the rest from there goes again"));
      return absl::OkStatus();
    }
    // A refusal, or a stream that cannot go on from where the destination is: no retry mends
    // it. Failed connects and handshakes (the link still down) are tried again.
    const bool refused = !absl::IsUnavailable(last) && !absl::IsDeadlineExceeded(last) &&
                         !stream::IsConnectionLost(last);
    if (refused) break;
    const absl::Duration sleep = std::min(pause, deadline - absl::Now());
    if (sleep > absl::ZeroDuration()) absl::SleepFor(sleep);
    pause = std::min(pause * 2, absl::Milliseconds(500));
  }
  lost_ns_.fetch_add(absl::ToInt64Nanoseconds(absl::Now() - start), std::memory_order_relaxed);
  const std::string why = absl::StrCat(
      lost.message(), "; not resumed within the reconnect window (",
      absl::FormatDuration(window_), ", ", attempts, " attempt(s)",
      last.ok() ? "" : absl::StrCat(", last: ", last.message()), ")");
  Log(why);
  return stream::ConnectionLostError(absl::Status(lost.code(), why));
}

}  // namespace migmover::transport
