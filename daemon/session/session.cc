#include "daemon/session/session.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "daemon/base/log.h"

namespace migmover {

const char* SessionPhaseName(SessionPhase phase) {
  switch (phase) {
    case SessionPhase::kPrepared:
      return "PREPARED";
    case SessionPhase::kConnecting:
      return "CONNECTING";
    case SessionPhase::kPreCopy:
      return "PRE_COPY";
    case SessionPhase::kStopCopy:
      return "STOP_COPY";
    case SessionPhase::kCommitting:
      return "COMMITTING";
    case SessionPhase::kSucceeded:
      return "SUCCEEDED";
    case SessionPhase::kInDoubt:
      return "IN_DOUBT";
    case SessionPhase::kFailed:
      return "FAILED";
    case SessionPhase::kCancelled:
      return "CANCELLED";
  }
  return "?";
}

bool IsFinal(SessionPhase phase) {
  return phase == SessionPhase::kSucceeded || phase == SessionPhase::kFailed ||
         phase == SessionPhase::kCancelled || phase == SessionPhase::kInDoubt;
}

bool IsSettled(SessionPhase phase) { return IsFinal(phase) && phase != SessionPhase::kInDoubt; }

Session::Session(std::string id, SessionRole role, const std::vector<std::string>& device_names)
    : id_(std::move(id)), role_(role) {
  for (const auto& n : device_names) {
    auto p = std::make_unique<DeviceProgress>();
    p->name = n;
    progress_.push_back(std::move(p));
  }
}

SessionPhase Session::phase() {
  absl::MutexLock l(&mu_);
  return phase_;
}

void Session::SetPhase(SessionPhase phase) {
  absl::MutexLock l(&mu_);
  if (IsFinal(phase_) || phase_ == phase) return;
  // Phases only move forward; a late worker must not pull the session back.
  if (!IsFinal(phase) && static_cast<int>(phase) < static_cast<int>(phase_)) return;
  MM_LOG(INFO)
          .With("session", id_)
          .With("from", SessionPhaseName(phase_))
          .With("to", SessionPhaseName(phase))
      << "session " << id_ << ": " << SessionPhaseName(phase_) << " -> " << SessionPhaseName(phase);
  phase_ = phase;
  ++version_;
  if (IsFinal(phase)) {
    end_ = absl::Now();
    ReportEndLocked();
  }
}

MetricsRole Session::MetricsRoleOf(SessionRole role) {
  return role == SessionRole::kSource ? MetricsRole::kSource : MetricsRole::kDestination;
}

const char* Session::ResultName(SessionPhase phase) {
  switch (phase) {
    case SessionPhase::kSucceeded:
      return "succeeded";
    case SessionPhase::kCancelled:
      return "cancelled";
    case SessionPhase::kInDoubt:
      return "in_doubt";
    default:
      return "failed";
  }
}

void Session::ReportEndLocked() {
  SessionOutcome o;
  o.role = MetricsRoleOf(role_);
  o.result = ResultName(phase_);
  uint64_t bytes = 0, precopy = 0;
  for (const auto& p : progress_) {
    bytes += p->bytes.load();
    precopy += p->precopy_bytes.load();
  }
  o.precopy_bytes = precopy;
  o.stop_copy_bytes = bytes - precopy;
  o.seconds = absl::ToDoubleSeconds(end_ - start_);
  if (role_ == SessionRole::kSource && stop_copy_start_ != absl::InfinitePast() &&
      stop_copy_end_ != absl::InfinitePast()) {
    o.downtime_seconds = absl::ToDoubleSeconds(stop_copy_end_ - stop_copy_start_);
  }
  Metrics().SessionEnded(o);
}

void Session::Fail(size_t device, const absl::Status& status) {
  absl::MutexLock l(&mu_);
  if (device < progress_.size() && progress_[device]->error.empty()) {
    progress_[device]->error = std::string(status.message());
  }
  if (error_.ok() && !IsFinal(phase_)) {
    error_ = status;
    const std::string name = device < progress_.size() ? progress_[device]->name : "?";
    MM_LOG(ERROR)
            .With("session", id_)
            .With("device", name)
            .With("code", absl::StatusCodeToString(status.code()))
        << "session " << id_ << ": device " << name << ": " << status;
  }
  ++version_;
}

absl::Status Session::error() {
  absl::MutexLock l(&mu_);
  return error_;
}

void Session::SetDeviceState(size_t device, const std::string& state) {
  absl::MutexLock l(&mu_);
  progress_[device]->state = state;
  ++version_;
}

void Session::SetDeviceDataPath(size_t device, const std::string& path) {
  absl::MutexLock l(&mu_);
  progress_[device]->data_path = path;
  ++version_;
}

void Session::SetDeviceTransport(size_t device, const std::string& transport,
                                 const std::string& security) {
  absl::MutexLock l(&mu_);
  progress_[device]->transport = transport;
  progress_[device]->security = security;
  ++version_;
}

void Session::SetDeviceIntegrity(size_t device, const std::string& integrity) {
  absl::MutexLock l(&mu_);
  progress_[device]->integrity = integrity;
  ++version_;
}

void Session::Touch() {
  absl::MutexLock l(&mu_);
  ++version_;
}

void Session::MarkStopCopyStart() {
  absl::MutexLock l(&mu_);
  if (stop_copy_start_ == absl::InfinitePast()) stop_copy_start_ = absl::Now();
}

void Session::MarkStopCopyEnd() {
  absl::MutexLock l(&mu_);
  stop_copy_end_ = absl::Now();
}

bool Session::LeaveDoubt(const absl::Status& outcome) {
  absl::MutexLock l(&mu_);
  if (phase_ != SessionPhase::kInDoubt) return false;
  const SessionPhase next = outcome.ok() ? SessionPhase::kSucceeded : SessionPhase::kFailed;
  MM_LOG(INFO) << "session " << id_ << ": IN_DOUBT -> " << SessionPhaseName(next)
               << ", settled by the agent" << (outcome.ok() ? "" : ": ") << outcome.message();
  phase_ = next;
  error_ = outcome;
  end_ = absl::Now();
  ++version_;
  Metrics().SessionSettled(MetricsRoleOf(role_), "in_doubt", ResultName(next));
  return true;
}

void Session::Finish(absl::Status in_doubt) {
  absl::MutexLock l(&mu_);
  if (IsFinal(phase_)) return;
  SessionPhase next = SessionPhase::kSucceeded;
  if (!error_.ok()) {
    next = error_.code() == absl::StatusCode::kCancelled ? SessionPhase::kCancelled
                                                         : SessionPhase::kFailed;
  } else if (!in_doubt.ok()) {
    next = SessionPhase::kInDoubt;
    error_ = in_doubt;
  }
  MM_LOG(INFO)
          .With("session", id_)
          .With("from", SessionPhaseName(phase_))
          .With("to", SessionPhaseName(next))
      << "session " << id_ << ": " << SessionPhaseName(phase_) << " -> " << SessionPhaseName(next);
  phase_ = next;
  end_ = absl::Now();
  ++version_;
  ReportEndLocked();
  // One line an SRE can grep for: what moved, how fast, and what the VM paid.
  uint64_t bytes = 0, precopy = 0;
  for (const auto& p : progress_) {
    bytes += p->bytes.load();
    precopy += p->precopy_bytes.load();
  }
  const double seconds = absl::ToDoubleSeconds(end_ - start_);
  std::string summary = absl::StrFormat("session %s %s: %s, %d device(s), %d bytes in %.3f s", id_,
                                        role_ == SessionRole::kSource ? "source" : "destination",
                                        SessionPhaseName(next), progress_.size(), bytes, seconds);
  if (role_ == SessionRole::kSource) {
    absl::StrAppendFormat(&summary, " (%d in PRE_COPY, %d in STOP_COPY)", precopy, bytes - precopy);
  }
  if (role_ == SessionRole::kSource && stop_copy_start_ != absl::InfinitePast() &&
      stop_copy_end_ != absl::InfinitePast()) {
    absl::StrAppendFormat(&summary, ", STOP_COPY downtime %.1f ms",
                          absl::ToDoubleMilliseconds(stop_copy_end_ - stop_copy_start_));
  }
  if (!error_.ok()) absl::StrAppend(&summary, ", error: ", error_.message());
  MM_LOG(INFO) << summary;
}

void Session::NoteResumes(size_t device, const transport::ResumeStats& stats) {
  DeviceProgress& p = *progress_[device];
  p.reconnections = static_cast<uint32_t>(stats.reconnections);
  p.time_lost_ns = absl::ToInt64Nanoseconds(stats.time_lost);
  p.replayed_bytes = stats.replayed_bytes;
  Touch();
}

void Session::LogDeviceLine(size_t device, const std::string& line) {
  MM_LOG(WARNING) << "session " << id_ << ": device " << progress_[device]->name << ": " << line;
}

SessionSnapshot Session::Snapshot() {
  absl::MutexLock l(&mu_);
  SessionSnapshot s;
  s.id = id_;
  s.role = role_;
  s.phase = phase_;
  s.error = error_;
  s.version = version_;
  s.bandwidth = bandwidth_.load();
  const absl::Time now = absl::Now();
  s.elapsed_seconds = absl::ToDoubleSeconds((IsFinal(phase_) ? end_ : now) - start_);
  uint32_t rounds = UINT32_MAX;
  bool all_verified = !progress_.empty();
  // What a switchover now would have to move, per device: the larger of what precopy still has
  // to read and what the driver says STOP_COPY will stream.
  uint64_t remaining = 0;
  bool all_loaded = true, any_precopy = false;
  s.stop_copy_size_known = true;
  const bool window = absl::ToDoubleSeconds(now - rate_time_) >= 0.25;
  for (const auto& p : progress_) {
    DeviceSnapshot d{p->name,     p->state,     p->data_path, p->transport,
                     p->security, p->integrity, p->error};
    // PRE_COPY's count first: both only grow, so bytes >= precopy_bytes holds in the snapshot.
    d.precopy_bytes = p->precopy_bytes.load();
    d.bytes = std::max(p->bytes.load(), d.precopy_bytes);
    d.pending_bytes = p->pending_bytes.load();
    d.precopy_rounds = p->precopy_rounds.load();
    d.digest_checked = p->digest_checked.load();
    d.committed = p->committed.load();
    const uint64_t size = p->stop_copy_size.load();
    d.stop_copy_size_known = size != DeviceProgress::kUnknownSize;
    d.stop_copy_size = d.stop_copy_size_known ? size : 0;
    d.initial_sent = p->initial_sent.load();
    d.initial_loaded = p->initial_loaded.load();
    d.reconnections = p->reconnections.load();
    d.time_lost_seconds = absl::ToDoubleSeconds(absl::Nanoseconds(p->time_lost_ns.load()));
    d.replayed_bytes = p->replayed_bytes.load();
    s.reconnections += d.reconnections;
    s.time_lost_seconds += d.time_lost_seconds;
    s.replayed_bytes += d.replayed_bytes;
    s.bytes_moved += d.bytes;
    s.precopy_bytes += d.precopy_bytes;
    s.pending_bytes += d.pending_bytes;
    s.stop_copy_size += d.stop_copy_size;
    s.stop_copy_size_known = s.stop_copy_size_known && d.stop_copy_size_known;
    if (p->precopy_capable.load()) {
      rounds = std::min(rounds, d.precopy_rounds);
      any_precopy = true;
      all_loaded = all_loaded && d.initial_loaded;
    }
    if (window) {
      const double dt = absl::ToDoubleSeconds(now - p->rate_time);
      p->rate = static_cast<double>(d.bytes - p->rate_bytes) / dt;
      p->transfer_rate = std::max(p->transfer_rate, p->rate);
      p->rate_time = now;
      p->rate_bytes = d.bytes;
    }
    d.rate_bytes_per_second = IsFinal(phase_) ? 0 : p->rate;
    const uint64_t device_remaining = std::max(d.pending_bytes, d.stop_copy_size);
    remaining += device_remaining;
    if (const double r = CappedRate(p->transfer_rate); r > 0) {
      d.expected_downtime_seconds = static_cast<double>(device_remaining) / r;
    }
    // Committed streams were checked (the destination refuses the rest); the integrity says by
    // what, and a device without one was not verified.
    all_verified = all_verified && d.committed && !d.integrity.empty();
    s.devices.push_back(std::move(d));
  }
  s.precopy_rounds = rounds == UINT32_MAX ? 0 : rounds;
  s.stop_copy_bytes = s.bytes_moved - s.precopy_bytes;
  s.verified =
      role_ == SessionRole::kDestination && all_verified && phase_ == SessionPhase::kSucceeded;
  if (window) {
    const double dt = absl::ToDoubleSeconds(now - rate_time_);
    rate_ = static_cast<double>(s.bytes_moved - rate_bytes_) / dt;
    transfer_rate_ = std::max(transfer_rate_, rate_);
    rate_time_ = now;
    rate_bytes_ = s.bytes_moved;
  }
  s.rate_bytes_per_second = IsFinal(phase_) ? 0 : rate_;
  s.transfer_rate_bytes_per_second = CappedRate(transfer_rate_);
  if (s.transfer_rate_bytes_per_second > 0) {
    s.expected_downtime_seconds =
        static_cast<double>(remaining) / s.transfer_rate_bytes_per_second;
  }
  s.downtime_limit_seconds = absl::ToDoubleSeconds(downtime_limit_);
  if (role_ == SessionRole::kSource && phase_ == SessionPhase::kPreCopy) {
    // Without a precopy device nothing converges: the downtime is what it is, and the agent
    // may switch over at once.
    // Nothing left, or no rate measured to estimate by (nothing moved yet), is no reason to
    // wait once the initial data is in.
    s.switchover_ready =
        !any_precopy ||
        (all_loaded && (remaining == 0 || s.transfer_rate_bytes_per_second == 0 ||
                        s.expected_downtime_seconds <= s.downtime_limit_seconds));
  }
  if (stop_copy_start_ != absl::InfinitePast()) {
    absl::Time end = stop_copy_end_ != absl::InfinitePast() ? stop_copy_end_ : now;
    s.stop_copy_seconds = absl::ToDoubleSeconds(end - stop_copy_start_);
  }
  return s;
}

double Session::CappedRate(double measured) const {
  const uint64_t cap = bandwidth_.load();
  return cap != 0 ? std::min(measured, static_cast<double>(cap)) : measured;
}

SessionSnapshot Session::WaitForChange(uint64_t version, absl::Duration timeout) {
  {
    absl::MutexLock l(&mu_);
    auto changed = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return version_ != version; };
    mu_.AwaitWithTimeout(absl::Condition(&changed), timeout);
  }
  return Snapshot();
}

}  // namespace migmover
