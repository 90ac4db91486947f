#include "transport/testing/fake_stream.h"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "transport/base/errno_status.h"
#include "transport/base/status_macros.h"
#include "transport/stream/stream_errors.h"

namespace migmover::transport {
namespace {

using wire::Phase;

// How often a waiting end looks at its `cancel` flag, which nothing signals.
constexpr absl::Duration kCancelSlice = absl::Milliseconds(20);
constexpr int kPollSliceMs = 20;

// Waits with `mu` held until `ready()` holds. False when `cancel` was raised or `deadline`
// passed first. (The analysis cannot tell that `ready`'s lock is `mu`: it is, by every caller.)
template <typename Ready>
bool AwaitOrCancel(absl::Mutex& mu, const Ready& ready, const std::atomic<bool>& cancel,
                   absl::Time deadline) ABSL_NO_THREAD_SAFETY_ANALYSIS {
  while (!ready()) {
    const absl::Time now = absl::Now();
    if (cancel.load() || now >= deadline) return false;
    mu.AwaitWithTimeout(absl::Condition(&ready), std::min(kCancelSlice, deadline - now));
  }
  return true;
}

absl::Status SessionCancelled() { return absl::CancelledError("session cancelled"); }

}  // namespace

FakeSender::~FakeSender() {
  absl::MutexLock l(&wire_->mu);
  wire_->sender_gone = true;
}

absl::Status FakeSender::PeerVerdictLocked() const {
  if (wire_->verdict.has_value()) {
    // Even a COMMIT(0) is wrong mid-stream: nothing was committed yet.
    if (wire_->verdict->ok()) return absl::DataLossError("destination committed before END_STREAM");
    return absl::Status(wire_->verdict->code(),
                        absl::StrCat("destination gave up: ", wire_->verdict->message()));
  }
  if (wire_->receiver_gone) {
    return absl::UnavailableError(
        absl::StrCat("destination closed the connection of device stream ", wire_->device));
  }
  return absl::OkStatus();
}

absl::Status FakeSender::Push(std::string chunk, const std::atomic<bool>& cancel) {
  absl::MutexLock l(&wire_->mu);
  auto room = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(wire_->mu) {
    return wire_->queued < wire_->max_queued || !PeerVerdictLocked().ok();
  };
  if (!AwaitOrCancel(wire_->mu, room, cancel, absl::Now() + options_.idle_timeout)) {
    if (cancel.load()) return SessionCancelled();
    return stream::NoProgressError(wire_->device, options_.idle_timeout, "waiting on the peer");
  }
  RETURN_IF_ERROR(PeerVerdictLocked());
  wire_->queued += chunk.size();
  wire_->chunks.push_back(std::move(chunk));
  return absl::OkStatus();
}

absl::StatusOr<PumpResult> FakeSender::Pump(int data_fd, Phase phase, uint64_t max_bytes,
                                            const std::atomic<bool>& stop,
                                            const std::atomic<bool>& cancel) {
  const bool precopy = phase == Phase::kPreCopy;
  PumpResult result;
  absl::Time last_progress = absl::Now();
  while (true) {
    if (cancel.load()) return SessionCancelled();
    {
      absl::MutexLock l(&wire_->mu);
      RETURN_IF_ERROR(PeerVerdictLocked());
    }
    if (options_.fault.has_value() && sent_.load() >= options_.fault->after_bytes) {
      return options_.fault->status;
    }
    if (result.bytes >= max_bytes) {
      result.end = PumpResult::End::kBudget;
      return result;
    }
    if (stop.load()) {
      result.end = PumpResult::End::kStopped;
      return result;
    }
    // Never block in read(2): a PRE_COPY pipe may stay empty for as long as the device likes,
    // and stop and cancel must still be seen.
    pollfd p{data_fd, POLLIN, 0};
    const int ready = ::poll(&p, 1, kPollSliceMs);
    if (ready < 0 && errno != EINTR) {
      return ErrnoStatus(absl::StrCat("poll(data fd ", data_fd, ")"), errno);
    }
    if (ready <= 0) {
      if (precopy) {
        result.end = PumpResult::End::kDrained;  // Nothing right now, as EAGAIN would say.
        return result;
      }
      if (absl::Now() - last_progress > options_.idle_timeout) {
        return stream::NoProgressError(wire_->device, options_.idle_timeout,
                                       "waiting on the data fd");
      }
      continue;
    }
    std::string chunk(std::min<uint64_t>(options_.chunk_size, max_bytes - result.bytes), '\0');
    const ssize_t got = ::read(data_fd, chunk.data(), chunk.size());
    if (got < 0) {
      const int err = errno;
      if (err == EINTR || (err == EAGAIN && !precopy)) continue;
      if (precopy && (err == ENOMSG || err == EAGAIN)) {
        result.end = PumpResult::End::kDrained;
        return result;
      }
      return ErrnoStatus(absl::StrCat("read(data fd ", data_fd, ")"), err);
    }
    if (got == 0) {
      result.end = precopy ? PumpResult::End::kDrained : PumpResult::End::kEof;
      return result;
    }
    chunk.resize(static_cast<size_t>(got));
    digest_.Update(chunk.data(), chunk.size());
    RETURN_IF_ERROR(Push(std::move(chunk), cancel));
    result.bytes += static_cast<uint64_t>(got);
    sent_ += static_cast<uint64_t>(got);
    if (counter_ != nullptr) *counter_ += static_cast<uint64_t>(got);
    last_progress = absl::Now();
  }
}

absl::Status FakeSender::EndPhase(Phase phase) {
  absl::MutexLock l(&wire_->mu);
  RETURN_IF_ERROR(PeerVerdictLocked());
  if (phase == Phase::kPreCopy) ++wire_->precopy_phases_ended;
  return absl::OkStatus();
}

absl::Status FakeSender::MarkInitialDataSent() {
  absl::MutexLock l(&wire_->mu);
  RETURN_IF_ERROR(PeerVerdictLocked());
  if (wire_->initial_end_out != nullptr) wire_->initial_end_out->store(sent_.load());
  return absl::OkStatus();
}

absl::Status FakeSender::Keepalive() {
  absl::MutexLock l(&wire_->mu);
  if (wire_->end_total.has_value() && wire_->verdict.has_value() && wire_->verdict->ok()) {
    // Committed, waiting for the session's decision: only a destination gone matters.
    if (!wire_->receiver_gone) return absl::OkStatus();
    return absl::UnavailableError(absl::StrCat("destination closed the connection of device "
                                               "stream ", wire_->device, " before CONFIRM"));
  }
  return PeerVerdictLocked();
}

absl::Status FakeSender::EndStream() {
  absl::MutexLock l(&wire_->mu);
  RETURN_IF_ERROR(PeerVerdictLocked());
  wire_->end_total = sent_.load();
  wire_->end_digest = digest_.Value();
  return absl::OkStatus();
}

absl::Status FakeSender::AwaitCommit(absl::Duration timeout, const std::atomic<bool>& cancel) {
  // Counted for the whole call, so a test that saw the count knows the sender is past END_STREAM.
  struct Counted {
    WaitableCount* count;
    explicit Counted(WaitableCount* count) : count(count) {
      if (count != nullptr) count->Add(1);
    }
    ~Counted() {
      if (count != nullptr) count->Add(-1);
    }
  } counted(wire_->commit_waiters);
  absl::MutexLock l(&wire_->mu);
  auto heard = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(wire_->mu) {
    return !options_.withhold_verdict && (wire_->verdict.has_value() || wire_->receiver_gone);
  };
  if (!AwaitOrCancel(wire_->mu, heard, cancel, absl::Now() + timeout)) {
    if (cancel.load()) return SessionCancelled();
    return absl::DeadlineExceededError(absl::StrCat(
        "device stream ", wire_->device, ": no COMMIT within ", absl::FormatDuration(timeout)));
  }
  if (!wire_->verdict.has_value()) {
    return absl::UnavailableError(
        absl::StrCat("destination closed device stream ", wire_->device, " before its COMMIT"));
  }
  if (wire_->verdict->ok()) return absl::OkStatus();
  return absl::Status(wire_->verdict->code(),
                      absl::StrCat("destination: ", wire_->verdict->message()));
}

absl::Status FakeSender::Confirm() {
  if (options_.confirm_gate) {
    if (options_.confirm_waiters != nullptr) options_.confirm_waiters->Add(1);
    options_.confirm_gate->WaitForNotification();
  }
  absl::MutexLock l(&wire_->mu);
  if (wire_->receiver_gone) {
    return absl::UnavailableError(
        absl::StrCat("destination closed device stream ", wire_->device, " before CONFIRM"));
  }
  if (!options_.withhold_confirm) wire_->confirmed = true;
  return absl::OkStatus();
}

void FakeSender::SendError(absl::Status why, absl::Duration) {
  absl::MutexLock l(&wire_->mu);
  if (!wire_->abandoned.has_value()) wire_->abandoned = std::move(why);
}

FakeReceiver::~FakeReceiver() {
  absl::MutexLock l(&wire_->mu);
  wire_->receiver_gone = true;
}

absl::StatusOr<std::optional<std::string>> FakeReceiver::Pop(const std::atomic<bool>& cancel) {
  absl::MutexLock l(&wire_->mu);
  auto something = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(wire_->mu) {
    return wire_->abandoned.has_value() || wire_->sender_gone ||
           (!wire_->held && (!wire_->chunks.empty() || wire_->end_total.has_value()));
  };
  if (!AwaitOrCancel(wire_->mu, something, cancel, absl::Now() + options_.idle_timeout)) {
    if (cancel.load()) return SessionCancelled();
    return stream::NoProgressError(wire_->device, options_.idle_timeout, "waiting on the source");
  }
  // An ERROR ends the stream even with data still queued ahead of it: the source gave up.
  if (wire_->abandoned.has_value()) {
    return absl::AbortedError(
        absl::StrCat("source abandoned the stream: ", wire_->abandoned->message()));
  }
  if (!wire_->held && !wire_->chunks.empty()) {
    std::string chunk = std::move(wire_->chunks.front());
    wire_->chunks.pop_front();
    wire_->queued -= chunk.size();
    return std::optional<std::string>(std::move(chunk));
  }
  if (!wire_->held && wire_->end_total.has_value()) return std::optional<std::string>();
  return absl::UnavailableError(
      absl::StrCat("source closed the connection of device stream ", wire_->device));
}

absl::Status FakeReceiver::WriteFully(int data_fd, const std::string& chunk,
                                      const std::atomic<bool>& cancel) {
  size_t done = 0;
  absl::Time last_progress = absl::Now();
  while (done < chunk.size()) {
    if (cancel.load()) return SessionCancelled();
    // Wait for room rather than block in write(2), so a stalled device cannot hide a cancel.
    pollfd p{data_fd, POLLOUT, 0};
    const int ready = ::poll(&p, 1, kPollSliceMs);
    if (ready < 0 && errno != EINTR) {
      return ErrnoStatus(absl::StrCat("poll(data fd ", data_fd, ")"), errno);
    }
    if (ready <= 0) {
      if (absl::Now() - last_progress > options_.idle_timeout) {
        return stream::NoProgressError(wire_->device, options_.idle_timeout,
                                       "waiting on the data fd");
      }
      continue;
    }
    const ssize_t n = ::write(data_fd, chunk.data() + done, chunk.size() - done);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return ErrnoStatus(absl::StrCat("write(data fd ", data_fd, ", ", chunk.size() - done, ")"),
                         errno);
    }
    done += static_cast<size_t>(n);
    last_progress = absl::Now();
  }
  return absl::OkStatus();
}

absl::StatusOr<ReceiveResult> FakeReceiver::Receive(int data_fd, const std::atomic<bool>& cancel) {
  while (true) {
    if (options_.fault.has_value() && received_.load() >= options_.fault->after_bytes) {
      return options_.fault->status;
    }
    ASSIGN_OR_RETURN(std::optional<std::string> chunk, Pop(cancel));
    if (!chunk.has_value()) break;
    RETURN_IF_ERROR(WriteFully(data_fd, *chunk, cancel));
    digest_.Update(chunk->data(), chunk->size());
    received_ += chunk->size();
    if (counter_ != nullptr) *counter_ += chunk->size();
  }
  ReceiveResult result;
  {
    absl::MutexLock l(&wire_->mu);
    if (*wire_->end_total != received_.load()) {
      return stream::EndStreamTotalError(*wire_->end_total, received_.load());
    }
    if (wire_->end_digest != digest_.Value()) return stream::DigestMismatchError();
    result.precopy_phases_ended = wire_->precopy_phases_ended;
  }
  result.total_bytes = received_.load();
  // Every byte passed through both ends' userspace, unless the test says nothing checked it.
  result.digest_checked = !options_.unchecked;
  return result;
}

absl::Status FakeReceiver::AwaitConfirm(absl::Duration timeout, const std::atomic<bool>& cancel) {
  absl::MutexLock l(&wire_->mu);
  auto heard = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(wire_->mu) {
    return wire_->confirmed || wire_->abandoned.has_value() || wire_->sender_gone;
  };
  if (!AwaitOrCancel(wire_->mu, heard, cancel, absl::Now() + timeout)) {
    if (cancel.load()) return SessionCancelled();
    return absl::DeadlineExceededError(absl::StrCat(
        "device stream ", wire_->device, ": no CONFIRM within ", absl::FormatDuration(timeout)));
  }
  if (wire_->confirmed) return absl::OkStatus();
  if (wire_->abandoned.has_value()) {
    return absl::AbortedError(
        absl::StrCat("source abandoned the migration: ", wire_->abandoned->message()));
  }
  return absl::UnavailableError(absl::StrCat("source closed the connection of device stream ",
                                             wire_->device, " before CONFIRM"));
}

absl::Status FakeReceiver::SendCommit(const absl::Status& result, absl::Duration) {
  absl::MutexLock l(&wire_->mu);
  if (wire_->sender_gone) {
    return absl::UnavailableError(
        absl::StrCat("source closed the connection of device stream ", wire_->device));
  }
  wire_->verdict = result;
  return absl::OkStatus();
}

}  // namespace migmover::transport
