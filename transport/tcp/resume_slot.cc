#include "transport/tcp/resume_slot.h"

#include <sys/socket.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "transport/peer/handshake.h"

namespace migmover::transport {

ResumeSlot::ResumeSlot(uint32_t device, const peer::HelloNonce& nonce, uint32_t streams,
                       bool tls)
    : device_(device), nonce_(nonce), streams_(streams), tls_(tls) {}

absl::Status ResumeSlot::Offer(const peer::Hello& hello, UniqueFd* connection, bool tls,
                               std::string security) {
  std::vector<UniqueFd> dropped;  // Closed after the lock.
  absl::MutexLock l(&mu_);
  const std::string who = absl::StrCat("device ", device_, " resume ", hello.resume, " stream ",
                                       hello.stream);
  if (closed_) {
    return absl::FailedPreconditionError(
        absl::StrCat(who, ": the stream cannot resume (", closed_why_.message(), ")"));
  }
  if (hello.nonce != nonce_) {
    // The nonce salts the stream's keys: a resume goes on with the same stream, not a new one.
    return absl::InvalidArgumentError(absl::StrCat(who, ": another nonce than the stream's"));
  }
  if (hello.stream_count != streams_ || hello.stream >= streams_) {
    return absl::InvalidArgumentError(absl::StrCat(who, " of ", hello.stream_count,
                                                   ": the stream has ", streams_,
                                                   " connections"));
  }
  if (tls != tls_) {
    return absl::InvalidArgumentError(absl::StrCat(
        who, tls ? ": TLS, where the stream began in plaintext"
                 : ": plaintext, where the stream began under TLS"));
  }
  if (hello.resume <= last_taken_ || hello.resume < offered_) {
    // A recorded resuming HELLO played again, or an attempt the source already gave up.
    return absl::AlreadyExistsError(absl::StrCat(
        who, ": resume ", std::max(last_taken_, offered_), " came already"));
  }
  if (hello.resume > offered_) {
    // A newer attempt: the older one's connections go, and so do the stream's current ones
    // (the source gave them up; a receive waiting on one must end now).
    for (UniqueFd& fd : pending_) {
      if (fd.valid()) dropped.push_back(std::move(fd));
    }
    pending_.clear();
    pending_.resize(streams_);
    pending_security_.assign(streams_, "");
    offered_ = hello.resume;
    for (UniqueFd& fd : live_) ::shutdown(fd.get(), SHUT_RDWR);
    live_.clear();
  }
  if (pending_[hello.stream].valid()) {
    return absl::AlreadyExistsError(absl::StrCat(who, ": offered already"));
  }
  pending_[hello.stream] = std::move(*connection);
  pending_security_[hello.stream] = std::move(security);
  return absl::OkStatus();
}

void ResumeSlot::SetLive(std::vector<UniqueFd> connections) {
  absl::MutexLock l(&mu_);
  if (offered_ > last_taken_) {
    // A newer resume came while the receiver took the last one: these are given up already.
    for (UniqueFd& fd : connections) ::shutdown(fd.get(), SHUT_RDWR);
  }
  live_ = std::move(connections);
}

absl::StatusOr<ResumeSlot::Set> ResumeSlot::Await(absl::Time deadline,
                                                  const std::atomic<bool>& cancel) {
  absl::MutexLock l(&mu_);
  auto complete = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return closed_ || (offered_ > last_taken_ && !pending_.empty() &&
                       std::all_of(pending_.begin(), pending_.end(),
                                   [](const UniqueFd& fd) { return fd.valid(); }));
  };
  while (!complete()) {
    if (cancel.load()) return absl::CancelledError("stream cancelled while waiting for a resume");
    const absl::Time now = absl::Now();
    if (now >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("device ", device_, ": no resume came within the reconnect window"));
    }
    mu_.AwaitWithDeadline(absl::Condition(&complete), std::min(deadline, now + absl::Milliseconds(50)));
  }
  if (closed_) {
    return absl::FailedPreconditionError(
        absl::StrCat("device ", device_, ": ", closed_why_.message()));
  }
  Set s;
  s.resume = offered_;
  s.connections = std::move(pending_);
  s.security = std::move(pending_security_);
  pending_.clear();
  pending_security_.clear();
  last_taken_ = offered_;
  return s;
}

void ResumeSlot::Close(const absl::Status& why) {
  std::vector<UniqueFd> pending;
  {
    absl::MutexLock l(&mu_);
    if (closed_) return;
    closed_ = true;
    closed_why_ = why.ok() ? absl::FailedPreconditionError("the stream ended") : why;
    pending.swap(pending_);
    live_.clear();
  }
  const absl::Status refusal = absl::FailedPreconditionError(
      absl::StrCat("device ", device_, " cannot resume: ", why.ok() ? "its stream ended" : why.message()));
  for (UniqueFd& fd : pending) {
    if (fd.valid()) {
      (void)peer::SendHelloAck(fd.get(), refusal, device_, absl::Now() + absl::Milliseconds(200));
    }
  }
}

}  // namespace migmover::transport
