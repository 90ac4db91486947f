#include "transport/tcp/resuming_receiver.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "transport/peer/peer_connect.h"
#include "transport/stream/stream_errors.h"

namespace migmover::transport {

ResumingReceiver::ResumingReceiver(std::unique_ptr<stream::StreamReceiver> inner,
                                   std::shared_ptr<ResumeSlot> slot, absl::Duration window)
    : inner_(std::move(inner)),
      slot_(std::move(slot)),
      window_(window),
      security_(inner_->security()) {}

ResumingReceiver::~ResumingReceiver() {
  slot_->Close(absl::FailedPreconditionError("the stream is over"));
}

absl::StatusOr<ReceiveResult> ResumingReceiver::Receive(int data_fd,
                                                        const std::atomic<bool>& cancel) {
  while (true) {
    if (window_ > absl::ZeroDuration()) {
      // A resume that comes while this receive still waits on its connections cuts them.
      absl::StatusOr<std::vector<UniqueFd>> live = inner_->DupConnections();
      if (live.ok()) slot_->SetLive(std::move(*live));
    }
    absl::StatusOr<ReceiveResult> r = inner_->Receive(data_fd, cancel);
    if (r.ok() || window_ <= absl::ZeroDuration() || !stream::IsConnectionLost(r.status()) ||
        !inner_->resumable()) {
      slot_->Close(r.ok() ? absl::FailedPreconditionError("its stream ended") : r.status());
      return r;
    }
    const absl::Time start = absl::Now();
    Log(absl::StrCat("connection lost with ", inner_->bytes_received(),
                     " bytes written into the device (", r.status().message(),
                     "); waiting up to ", absl::FormatDuration(window_),
                     " for the source to resume"));
    absl::StatusOr<ResumeSlot::Set> set = slot_->Await(start + window_, cancel);
    absl::Status resumed = set.status();
    uint64_t offset = 0;
    if (set.ok()) {
      absl::StatusOr<uint64_t> at = inner_->Resume(std::move(set->connections));
      resumed = at.status();
      if (at.ok()) {
        offset = *at;
        resumed = inner_->AnswerResume(absl::Now() + absl::Seconds(5));
      }
    }
    const absl::Duration took = absl::Now() - start;
    lost_ns_.fetch_add(absl::ToInt64Nanoseconds(took), std::memory_order_relaxed);
    if (!resumed.ok() && absl::IsCancelled(resumed)) {
      slot_->Close(resumed);
      return resumed;
    }
    if (!resumed.ok() && !stream::IsConnectionLost(resumed) && !absl::IsUnavailable(resumed)) {
      // No resume in the window (or one that could not go on): the receive fails as it would
      // have without one.
      const std::string why = absl::StrCat(r.status().message(), "; not resumed: ",
                                           resumed.message());
      Log(why);
      slot_->Close(resumed);
      return stream::ConnectionLostError(absl::Status(r.status().code(), why));
    }
    if (resumed.ok()) {
      reconnections_.fetch_add(1, std::memory_order_relaxed);
      const std::string security = peer::DescribeStripes(set->security);
      {
        absl::MutexLock l(&security_mu_);
        security_ = security;
      }
      Log(absl::StrCat("resumed (resume ", set->resume, ") after ", absl::FormatDuration(took),
                       " from stream offset ", offset));
    }
    // Resumed, or the answer to the resume failed (the new connections broke too): the next
    // receive runs, and ends at once on a broken connection, to wait for the next resume.
  }
}

std::string ResumingReceiver::security() const {
  absl::MutexLock l(&security_mu_);
  return security_;
}

ResumeStats ResumingReceiver::resume_stats() const {
  ResumeStats r;
  r.reconnections = reconnections_.load(std::memory_order_relaxed);
  r.time_lost = absl::Nanoseconds(lost_ns_.load(std::memory_order_relaxed));
  return r;
}

}  // namespace migmover::transport
