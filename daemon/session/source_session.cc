#include "daemon/session/source_session.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "daemon/base/log.h"
#include "daemon/device/fsm_path.h"
#include "transport/base/errno_status.h"
#include "transport/base/status_macros.h"

namespace migmover {

using transport::PumpResult;
using wire::Phase;

namespace {
// A data-fd device whose fd an earlier session closed.
bool AgentFdClosed(DeviceEntry* e) {
  absl::MutexLock l(&e->mu);
  return !e->data_fd.valid();
}
}  // namespace

absl::StatusOr<std::shared_ptr<SourceSession>> SourceSession::Start(SourceConfig config,
                                                                    DeviceRegistry* registry) {
  if (config.devices.empty()) return absl::InvalidArgumentError("a session needs devices");
  if (config.devices.size() > wire::kMaxDevicesPerSession) {
    return absl::InvalidArgumentError(
        absl::StrCat("at most ", wire::kMaxDevicesPerSession, " devices per session"));
  }
  if (config.transport == nullptr) return absl::InvalidArgumentError("a session needs a transport");
  ASSIGN_OR_RETURN(std::vector<DeviceEntry*> entries,
                   registry->Claim(config.devices, config.session_id));
  for (DeviceEntry* e : entries) {
    absl::Status bad;
    if (e->kind == DeviceKind::kResumeDataFd) {
      bad = absl::FailedPreconditionError(
          absl::StrCat("device '", e->name, "' is a resume-data fd; a source needs save-data"));
    } else if (e->kind == DeviceKind::kSaveDataFd && AgentFdClosed(e)) {
      bad = absl::FailedPreconditionError(absl::StrCat(
          "device '", e->name, "': its save-data fd was closed when an earlier session ended "
          "(a data fd carries one stream); detach it and attach a new one"));
    } else if (e->runs_fsm()) {
      absl::MutexLock l(&e->mu);
      MigState s = e->device->last_known_state();
      if (s != MigState::kRunning && s != MigState::kRunningP2P) {
        bad = absl::FailedPreconditionError(absl::StrCat(
            "device '", e->name, "' is in ", MigStateName(s), "; a source starts from RUNNING"));
      }
    }
    if (!bad.ok()) {
      registry->Release(config.devices, config.session_id);
      return bad;
    }
  }
  config.stream.limiter = std::make_shared<stream::RateLimiter>(config.bandwidth);
  config.stream.limiter->JoinHost(config.host_bandwidth);
  // A peer that answers no connect or HELLO for the peer timeout is as lost as a silent one.
  config.connect_timeout = std::min(config.connect_timeout, PeerWatch::TimeoutFor(config.stream));
  transport::SessionSpec spec;
  spec.session_id = config.session_id;
  spec.device_count = static_cast<uint32_t>(entries.size());
  spec.token = config.token;
  spec.stream = config.stream;
  spec.streams = std::max<uint32_t>(1, config.streams);
  spec.workers = config.workers;
  spec.peer = config.peer;
  spec.tls = config.tls;
  auto channel = config.transport->StartSource(spec);
  if (!channel.ok()) {
    registry->Release(config.devices, config.session_id);
    return channel.status();
  }
  std::shared_ptr<SourceSession> s(new SourceSession(std::move(config), registry, entries));
  s->channel_ = std::move(*channel);
  s->bandwidth_ = s->config_.bandwidth;
  s->downtime_limit_ = s->config_.downtime_limit;
  s->SetPhase(SessionPhase::kConnecting);
  s->running_workers_ = static_cast<int>(entries.size());
  // Known before any worker runs, so a device still connecting counts as zero rounds rather
  // than not at all (the session's rounds are the fewest any device completed).
  for (size_t i = 0; i < entries.size(); ++i) {
    s->progress_[i]->precopy_capable = s->PrecopyFor(entries[i]);
  }
  // The watch thread's own reference, taken before any device thread could finish and drop
  // the session's.
  s->workers_.Start([p = s.get(), c = s->channel_]() mutable { p->WatchPeer(std::move(c)); });
  for (size_t i = 0; i < entries.size(); ++i) {
    s->workers_.Start([p = s.get(), i] { p->Run(i); });
  }
  return s;
}

SourceSession::SourceSession(SourceConfig config, DeviceRegistry* registry,
                             std::vector<DeviceEntry*> entries)
    : Session(config.session_id, SessionRole::kSource, config.devices),
      config_(std::move(config)),
      registry_(registry),
      entries_(std::move(entries)),
      data_fds_(entries_.size()),
      watch_(absl::StrCat("session ", id_), PeerWatch::TimeoutFor(config_.stream),
             [this](absl::Status why) { PeerLost(std::move(why)); }) {}

SourceSession::~SourceSession() {
  (void)Cancel();  // Refused only when every device committed: then it is finishing anyway.
  watch_.Stop();
  Join();
  channel_.reset();  // After every device thread: their streams came from it.
}

void SourceSession::Join() { workers_.Join(); }

absl::Status SourceSession::Switchover() {
  SessionPhase p = phase();
  if (switchover_.load()) return absl::OkStatus();  // Repeated (its reply was lost): a no-op.
  if (IsFinal(p)) {
    return absl::FailedPreconditionError(
        absl::StrCat("session '", id_, "' already ended (", SessionPhaseName(p), ")"));
  }
  if (!switchover_.exchange(true)) {
    MM_LOG(INFO) << "session " << id_ << ": switchover requested";
    MarkStopCopyStart();
    SetPhase(SessionPhase::kStopCopy);
    absl::MutexLock l(&wake_mu_);  // Wake idle PRE_COPY loops.
  }
  return absl::OkStatus();
}

void SourceSession::SetBandwidth(uint64_t bytes_per_second) {
  config_.stream.limiter->SetRate(bytes_per_second);
  bandwidth_ = bytes_per_second;
  MM_LOG(INFO) << "session " << id_ << ": bandwidth cap "
               << (bytes_per_second ? absl::StrCat(bytes_per_second, " bytes/s") : "off");
  Touch();
}

bool SourceSession::Abandon() {
  absl::MutexLock l(&decide_mu_);
  if (decision_ == Decision::kCommit) return false;
  decision_ = Decision::kAbort;
  cancel_ = true;
  return true;
}

absl::Status SourceSession::Cancel() {
  if (phase() == SessionPhase::kSucceeded) {
    return absl::FailedPreconditionError(absl::StrCat(
        "session '", id_, "' already SUCCEEDED: nothing to cancel (its devices stay stopped "
        "here; they run on the destination)"));
  }
  agent_cancelled_ = true;  // Before Abandon: the device threads it stops report a cancel.
  if (!Abandon()) {
    MM_LOG(INFO) << "session " << id_ << ": cancel requested after every device committed: "
                 << "too late, the migration completes";
    return absl::FailedPreconditionError(absl::StrCat(
        "session '", id_, "': too late to cancel, every device committed on the destination and "
        "the source passed its point of no return (its devices stay stopped)"));
  }
  if (!IsFinal(phase())) MM_LOG(INFO) << "session " << id_ << ": cancel requested";
  absl::MutexLock l(&wake_mu_);
  return absl::OkStatus();
}

void SourceSession::WatchPeer(std::shared_ptr<transport::SourceChannel> channel) {
  pthread_setname_np(pthread_self(), "mm-src-watch");
  absl::StatusOr<std::unique_ptr<transport::HeartbeatLink>> link =
      channel->OpenHeartbeat(config_.connect_timeout);
  if (watch_.stopped()) return;  // The session ended meanwhile.
  if (link.ok() && config_.stream.reconnect_window > absl::ZeroDuration()) {
    // A heartbeat lost with the network is opened again, as the streams are, until the window
    // runs out or the destination refuses (its session is over).
    watch_.set_replacement(
        config_.stream.reconnect_window,
        [this, channel](absl::Time deadline) -> std::unique_ptr<transport::HeartbeatLink> {
          absl::Duration pause = absl::Milliseconds(50);
          absl::Status last;
          while (!watch_.stopped()) {
            const absl::Duration left = deadline - absl::Now();
            if (left <= absl::ZeroDuration()) {
              MM_LOG(WARNING) << "session " << id_ << ": the heartbeat could not be opened again: "
                              << last;
              return nullptr;
            }
            // Short attempts: a connect into a dead link retries its SYN only after 1, 2, 4 s,
            // and a flapping link may be up for a moment only.
            absl::StatusOr<std::unique_ptr<transport::HeartbeatLink>> next =
                channel->OpenHeartbeat(std::min({left, config_.connect_timeout, absl::Seconds(1)}));
            if (next.ok()) return std::move(*next);
            last = next.status();
            if (!absl::IsUnavailable(next.status()) &&
                !absl::IsDeadlineExceeded(next.status())) {
              MM_LOG(WARNING) << "session " << id_ << ": new heartbeat refused: "
                              << next.status();
              return nullptr;
            }
            absl::SleepFor(std::min(pause, deadline - absl::Now()));
            pause = std::min(pause * 2, absl::Milliseconds(500));
          }
          return nullptr;
        });
  }
  channel.reset();
  if (!link.ok()) {
    // The peer that takes the streams takes the heartbeat: without it a hung destination would
    // go unnoticed in the idle phases, so the migration does not go on without one.
    PeerLost(absl::Status(link.status().code(),
                          absl::StrCat("heartbeat with the destination daemon: ",
                                       link.status().message())));
    return;
  }
  watch_.WatchDestination(
      link->get(), [this](uint32_t device) { OnLoaded(device); }, [this] { Tick(); });
  // The channel it held (and the session's streams' shared state with it: the bandwidth cap's
  // share) goes with the watch, not with the session's retention.
  watch_.set_replacement(absl::ZeroDuration(), nullptr);
}

void SourceSession::PeerLost(absl::Status why) {
  // Only a refusal keeps its code; a lost peer is DEADLINE_EXCEEDED (silence) or UNAVAILABLE.
  if (!absl::IsDeadlineExceeded(why) && !absl::IsPermissionDenied(why) &&
      !absl::IsFailedPrecondition(why) && !absl::IsNotFound(why) && !absl::IsInvalidArgument(why)) {
    why = absl::UnavailableError(why.message());
  }
  (void)AbandonFor(why, /*peer_lost=*/true);
}

bool SourceSession::AbandonFor(const absl::Status& why, bool peer_lost) {
  {
    absl::MutexLock l(&decide_mu_);
    if (decision_ == Decision::kCommit) {
      MM_LOG(INFO) << "session " << id_ << ": " << why << "; past the point of no return, "
                   << "the migration completes";
      return false;
    }
    if (decision_ == Decision::kAbort) return false;  // Failing already, for its own reason.
    decision_ = Decision::kAbort;
    abandoned_for_ = why;
    peer_lost_ = peer_lost;
    cancel_ = true;
  }
  MM_LOG(WARNING) << "session " << id_ << ": " << why
                  << "; abandoning the migration, the devices go back to RUNNING";
  absl::MutexLock l(&wake_mu_);  // Wake idle PRE_COPY loops.
  return true;
}

void SourceSession::OnLoaded(uint32_t device) {
  if (device >= progress_.size() || !progress_[device]->initial_sent.load()) {
    MM_LOG(WARNING) << "session " << id_ << ": the destination says device index " << device
                    << " loaded initial data this session never sent; ignored";
    return;
  }
  if (progress_[device]->initial_loaded.exchange(true)) return;
  MM_LOG(INFO) << "session " << id_ << ": device " << progress_[device]->name
               << ": initial precopy data loaded at the destination";
  Touch();
}

void SourceSession::ReadStopCopySize(size_t i, MigratableDevice* dev) {
  absl::StatusOr<uint64_t> size;
  {
    absl::MutexLock l(&entries_[i]->mu);
    size = dev->StopCopySize();
  }
  DeviceProgress& p = *progress_[i];
  // A driver that refuses MIG_DATA_SIZE leaves the size unknown, never zero.
  const uint64_t now = size.ok() && *size != DeviceProgress::kUnknownSize
                           ? *size
                           : DeviceProgress::kUnknownSize;
  if (p.stop_copy_size.exchange(now) != now) Touch();
}

bool SourceSession::Decided() {
  absl::MutexLock l(&decide_mu_);
  return decision_ != Decision::kOpen;
}

void SourceSession::Tick() {
  const SessionSnapshot s = Snapshot();  // Also moves the rate windows on.
  if (IsFinal(s.phase) || Decided()) return;
  if (s.switchover_ready != ready_reported_) {
    ready_reported_ = s.switchover_ready;
    MM_LOG(INFO) << "session " << id_ << ": switchover "
                 << (s.switchover_ready ? "ready" : "no longer ready") << ": expected downtime "
                 << absl::StrFormat("%.3f", s.expected_downtime_seconds) << " s (limit "
                 << absl::StrFormat("%.3f", s.downtime_limit_seconds) << " s), "
                 << s.pending_bytes << " precopy bytes pending, stop-copy size "
                 << (s.stop_copy_size_known ? absl::StrCat(s.stop_copy_size) : "unknown");
    Touch();
  }
  const absl::Time now = absl::Now();
  uint64_t remaining = 0;
  for (const DeviceSnapshot& d : s.devices) remaining += std::max(d.pending_bytes, d.stop_copy_size);
  state_bytes_ = std::max(state_bytes_, s.bytes_moved + remaining);
  if (s.phase == SessionPhase::kPreCopy) {
    // While initial data still moves, moving is progress; after, only a new low of what a
    // switchover would still have to move (or readiness) is.
    bool initial_done = true;
    for (size_t i = 0; i < s.devices.size(); ++i) {
      if (progress_[i]->precopy_capable.load() && !s.devices[i].initial_sent) initial_done = false;
    }
    if (!initial_done) {
      if (s.bytes_moved != last_bytes_) last_progress_ = now;
      best_remaining_ = UINT64_MAX;
    } else if (remaining < best_remaining_ || s.switchover_ready) {
      best_remaining_ = std::min(best_remaining_, remaining);
      last_progress_ = now;
    }
    last_bytes_ = s.bytes_moved;
    if (config_.progress_timeout > absl::ZeroDuration() &&
        now - last_progress_ > config_.progress_timeout) {
      (void)AbandonFor(absl::DeadlineExceededError(absl::StrCat(
          "progress_timeout: PRE_COPY came no closer to switchover for ",
          absl::FormatDuration(config_.progress_timeout), ": ", remaining,
          " bytes remain (fewest seen ", best_remaining_, "), expected downtime ",
          absl::StrFormat("%.3f", s.expected_downtime_seconds), " s against a limit of ",
          absl::StrFormat("%.3f", s.downtime_limit_seconds),
          " s; the devices' state changes faster than it moves (raise the bandwidth, or the "
          "downtime limit)")));
      return;
    }
  } else {
    last_progress_ = now;  // Only PRE_COPY converges; later phases have their own deadlines.
  }
  const absl::Duration elapsed = now - start_;
  if (config_.completion_timeout > absl::ZeroDuration() && elapsed > config_.completion_timeout) {
    (void)AbandonFor(absl::DeadlineExceededError(absl::StrCat(
        "completion_timeout: the migration did not complete within ",
        absl::FormatDuration(config_.completion_timeout))));
    return;
  }
  if (config_.completion_timeout_per_gib > absl::ZeroDuration()) {
    const double gib = std::max(1.0, static_cast<double>(state_bytes_) / (1ull << 30));
    const absl::Duration limit = config_.completion_timeout_per_gib * gib;
    if (elapsed > limit) {
      (void)AbandonFor(absl::DeadlineExceededError(absl::StrCat(
          "completion_timeout_per_gib: the migration did not complete within ",
          absl::FormatDuration(limit), " (", absl::FormatDuration(config_.completion_timeout_per_gib),
          " per GiB of device state, ", absl::StrFormat("%.2f", gib), " GiB counted)")));
    }
  }
}

absl::Duration SourceSession::KeepaliveEvery() const {
  return std::min(config_.stream.idle_timeout / 4,
                  PeerWatch::IntervalFor(PeerWatch::TimeoutFor(config_.stream)));
}

absl::StatusOr<bool> SourceSession::AwaitDecision(size_t i,
                                                  transport::DeviceStreamSender* sender) {
  {
    absl::MutexLock l(&decide_mu_);
    if (decision_ == Decision::kOpen && ++committed_ == entries_.size()) {
      decision_ = Decision::kCommit;
      MM_LOG(INFO) << "session " << id_ << ": every device committed: point of no return";
    }
  }
  auto decided = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(decide_mu_) {
    return decision_ != Decision::kOpen;
  };
  while (true) {
    {
      absl::MutexLock l(&decide_mu_);
      if (decide_mu_.AwaitWithTimeout(absl::Condition(&decided),
                                      KeepaliveEvery())) {
        if (decision_ == Decision::kCommit) return true;
        return absl::AbortedError("the migration was abandoned before every device committed");
      }
    }
    // The destination holds this device stopped while the others finish; tell it we are here.
    RETURN_IF_ERROR(sender->Keepalive());
  }
  (void)i;
}

void SourceSession::Run(size_t i) {
  pthread_setname_np(pthread_self(), absl::StrCat("mm-src-dev", i).substr(0, 15).c_str());
  absl::Status s = RunDevice(i);
  // A data fd carries one stream: whatever happened, the VMM writing it sees the end now
  // (EPIPE), not when the agent detaches the device. The agent keeps its own duplicate.
  if (!entries_[i]->runs_fsm()) CloseAgentDataFd(i);
  if (s.code() == absl::StatusCode::kCancelled && !agent_cancelled_.load()) {
    // Only the agent cancels a migration; a peer's CANCELLED verdict is a failure here.
    s = absl::AbortedError(s.message());
  }
  if (!s.ok()) {
    Fail(i, agent_cancelled_.load() && error().ok() ? absl::CancelledError("session cancelled")
                                                    : s);
    // One device failing fails the migration: stop the others too. RunDevice fails only
    // before the decision, so this cannot undo a commit.
    Abandon();
    { absl::MutexLock l(&wake_mu_); }
  }
  if (--running_workers_ == 0) {
    // The migration failed as a whole: every device resumes here, those whose own stream had
    // committed too, together (after the last device thread, so no arc races another's).
    if (!error().ok()) RecoverAll();
    watch_.Stop();
    registry_->Release(config_.devices, id_);
    // An ended session stays queryable for hours: it must not keep part of the host's cap.
    config_.stream.limiter->LeaveHost();
    Finish();
    // Every device is done with the channel: do not keep its threads (pump workers) for an
    // ended session that stays queryable.
    channel_.reset();
  }
}

void SourceSession::RecoverAll() {
  for (size_t i = 0; i < entries_.size(); ++i) {
    progress_[i]->committed = false;  // Undone: the VM resumes here.
    data_fds_[i].Reset();
  }
  // Rule 5 on the way back: every quiesced or stopped device reaches RUNNING_P2P before any
  // device leaves it; a device still running (RUNNING, PRE_COPY) only drops its data session.
  // A device that cannot take its step is reset (which runs it) only once every other device
  // took the RUNNING_P2P step.
  std::vector<bool> to_reset(entries_.size(), false);
  for (MigState step : {MigState::kRunningP2P, MigState::kRunning}) {
    if (step == MigState::kRunning) {
      for (size_t i = 0; i < entries_.size(); ++i) {
        if (!to_reset[i]) continue;
        DeviceEntry* e = entries_[i];
        absl::MutexLock l(&e->mu);
        if (absl::Status r = e->device->Reset(); !r.ok()) {
          MM_LOG(ERROR) << "session " << id_ << ": device " << e->name << ": reset failed: " << r;
        }
        SetDeviceState(i, MigStateName(e->device->last_known_state()));
      }
    }
    for (size_t i = 0; i < entries_.size(); ++i) {
      DeviceEntry* e = entries_[i];
      if (!e->runs_fsm() || to_reset[i]) continue;
      absl::MutexLock l(&e->mu);
      const MigState now = e->device->last_known_state();
      if (now == step) {
        // Also a device whose worker never started (another failed first): the status shows
        // it RUNNING, not blank.
        if (step == MigState::kRunning) SetDeviceState(i, MigStateName(now));
        continue;
      }
      if (step == MigState::kRunningP2P &&
          (!e->device->features().p2p() || now == MigState::kRunning ||
           now == MigState::kPreCopy)) {
        continue;
      }
      absl::StatusOr<UniqueFd> back = e->device->SetState(step);
      if (!back.ok()) {
        MM_LOG(WARNING) << "session " << id_ << ": device " << e->name << ": could not return to "
                        << MigStateName(step) << " (" << back.status() << "); resetting";
        if (step == MigState::kRunningP2P) {
          to_reset[i] = true;  // After the others reached RUNNING_P2P.
          continue;
        }
        if (absl::Status r = e->device->Reset(); !r.ok()) {
          MM_LOG(ERROR) << "session " << id_ << ": device " << e->name << ": reset failed: " << r;
        }
      }
      SetDeviceState(i, MigStateName(e->device->last_known_state()));
      if (step == MigState::kRunning) {
        MM_LOG(INFO) << "session " << id_ << ": device " << e->name << " back in "
                     << MigStateName(e->device->last_known_state());
      }
    }
  }
}

absl::Status SourceSession::QuiesceForSwitchover(size_t i) {
  DeviceEntry* e = entries_[i];
  if (e->device->features().p2p()) {
    absl::MutexLock l(&e->mu);
    const MigState quiet = e->device->last_known_state() == MigState::kPreCopy
                               ? MigState::kPreCopyP2P
                               : MigState::kRunningP2P;
    // The data fd of a PRE_COPY device stays open across PRE_COPY -> PRE_COPY_P2P.
    ASSIGN_OR_RETURN(UniqueFd unused, e->device->SetState(quiet));
    (void)unused;
    SetDeviceState(i, MigStateName(quiet));
  }
  size_t fsm_devices = 0;
  for (DeviceEntry* d : entries_) fsm_devices += d->runs_fsm() ? 1 : 0;
  absl::MutexLock l(&wake_mu_);
  ++quiesced_;
  auto all_quiet = [this, fsm_devices]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(wake_mu_) {
    return quiesced_ == fsm_devices || cancel_.load();
  };
  wake_mu_.Await(absl::Condition(&all_quiet));
  if (cancel_.load()) return absl::CancelledError("session cancelled");
  return absl::OkStatus();
}

absl::Status SourceSession::RunPrecopy(size_t i, MigratableDevice* dev, int data_fd,
                                       transport::DeviceStreamSender* sender) {
  DeviceProgress& p = *progress_[i];
  bool had_data = false;
  uint64_t round_bytes = 0;  // Moved since the last completed round.
  absl::Time last_sent = absl::Now();
  absl::Time size_read = absl::InfinitePast();
  while (!switchover_.load() && !cancel_.load()) {
    absl::StatusOr<PrecopyInfo> info;
    {
      absl::MutexLock l(&entries_[i]->mu);
      info = dev->GetPrecopyInfo(data_fd);
    }
    RETURN_IF_ERROR(info.status());
    const uint64_t pending = info->initial_bytes + info->dirty_bytes;
    p.pending_bytes = pending;
    if (info->initial_bytes == 0 && !p.initial_sent.load()) {
      // Every initial byte was pumped: the destination tells us once they are in its device
      // (switchover readiness, api/PEER_PROTOCOL.md).
      // Set first: the LOADED can come back before the send returns.
      p.initial_sent = true;
      RETURN_IF_ERROR(sender->MarkInitialDataSent());
      MM_LOG(INFO) << "session " << id_ << ": device " << entries_[i]->name
                   << ": initial precopy data sent (" << sender->bytes_sent() << " bytes)";
      Touch();
    }
    if (absl::Now() - size_read > absl::Milliseconds(200)) {
      ReadStopCopySize(i, dev);
      size_read = absl::Now();
    }
    if (pending == 0) {
      if (had_data && round_bytes > 0) {
        ++p.precopy_rounds;
        Touch();
      }
      had_data = false;
      round_bytes = 0;
      if (absl::Now() - last_sent > KeepaliveEvery()) {
        RETURN_IF_ERROR(sender->Keepalive());
        last_sent = absl::Now();
      }
      absl::MutexLock l(&wake_mu_);
      auto woken = [this] { return switchover_.load() || cancel_.load(); };
      wake_mu_.AwaitWithTimeout(absl::Condition(&woken), config_.precopy_poll);
      continue;
    }
    had_data = true;
    // In slices, so the driver's estimates (pending, stop-copy size) stay fresh while a large
    // state moves: they are what readiness and the progress timeout go by.
    ASSIGN_OR_RETURN(PumpResult r, sender->Pump(data_fd, Phase::kPreCopy,
                                                std::min<uint64_t>(pending, kPrecopySlice),
                                                switchover_, cancel_));
    p.precopy_bytes += r.bytes;
    round_bytes += r.bytes;
    last_sent = absl::Now();
    if (r.end == PumpResult::End::kDrained) {
      // The driver says "nothing right now" (0 or ENOMSG) even if its estimate disagreed. A
      // round is a pass that moved data: a driver answering 0 before producing any does not
      // complete one.
      if (round_bytes > 0) {
        ++p.precopy_rounds;
        Touch();
      } else {
        absl::MutexLock l(&wake_mu_);
        auto woken = [this] { return switchover_.load() || cancel_.load(); };
        wake_mu_.AwaitWithTimeout(absl::Condition(&woken), config_.precopy_poll);
      }
      round_bytes = 0;
      had_data = false;
    }
  }
  p.pending_bytes = 0;
  return absl::OkStatus();
}

bool SourceSession::PrecopyFor(DeviceEntry* e) const {
  return config_.precopy && e->runs_fsm() && e->device->features().pre_copy();
}

void SourceSession::CloseAgentDataFd(size_t i) {
  absl::MutexLock l(&entries_[i]->mu);
  entries_[i]->data_fd.Reset();
}

int SourceSession::AgentDataFd(size_t i) {
  absl::MutexLock l(&entries_[i]->mu);
  return entries_[i]->data_fd.get();
}

absl::Status SourceSession::RunAgentStream(size_t i, int data_fd,
                                           transport::DeviceStreamSender* sender) {
  DeviceEntry* e = entries_[i];
  DeviceProgress& p = *progress_[i];
  struct stat st{};
  if (::fstat(data_fd, &st) != 0) {
    return ErrnoStatus(absl::StrCat("fstat(save-data fd ", data_fd, ")"), errno);
  }
  // A pipe or socket says "nothing now" by having nothing to read, and its end by a hang-up:
  // the daemon polls it and reads only what is there, so it never blocks in a read while the
  // VMM pauses (and keepalives flow). Any other fd (a VFIO migration data fd, a file) says
  // "nothing now" with an empty read (0 or ENOMSG) until the agent's Switchover, and its end
  // with 0 after it.
  const bool stream_fd = S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode);
  static const std::atomic<bool> kNever{false};
  Phase phase = config_.precopy ? Phase::kPreCopy : Phase::kStopCopy;
  absl::Time last_sent = absl::Now();
  auto woken = [this] { return switchover_.load() || cancel_.load(); };
  auto gave_up = [&] {
    return absl::AbortedError(absl::StrCat(
        "device '", e->name, "': the save-data fd ended before Switchover, after ",
        sender->bytes_sent(), " bytes: its writer gave up (the agent calls Switchover once its "
        "VMM's device is in STOP_COPY; the fd's end then completes the stream)"));
  };
  // Every byte sent while in PRE_COPY counts there, a failed pump's too.
  auto count_precopy = [&] {
    if (phase != Phase::kPreCopy) return;
    // After a piece-by-piece pump, watchers see the count at once (a version change); a whole
    // stream's pump counts its bytes live as they leave, which watchers read with the byte
    // count (WatchSession rereads it every 100 ms).
    const uint64_t sent = sender->bytes_sent();
    if (p.precopy_bytes.exchange(sent) != sent) Touch();
  };
  auto to_stop_copy = [&]() -> absl::Status {
    // The agent's device is in STOP_COPY now: what follows is the rest of the stream.
    count_precopy();
    RETURN_IF_ERROR(sender->EndPhase(Phase::kPreCopy));
    phase = Phase::kStopCopy;
    return absl::OkStatus();
  };
  // A pipe or socket is pumped in one job for as long as it flows, whatever size the VMM's
  // writes are (one pump per piece cost more than the bytes did: 2.3 s/GB of the source's CPU
  // at 32 KiB writes), and handed back after a pause for a keepalive. Where the transport or
  // data path has no such pump (DPDK, splice), it is polled and pumped piece by piece.
  bool whole_stream = stream_fd;
  const absl::Duration idle_return =
      std::clamp(KeepaliveEvery() / 4, absl::Milliseconds(50), absl::Milliseconds(500));
  while (true) {
    if (cancel_.load()) return absl::CancelledError("session cancelled");
    if (phase == Phase::kPreCopy && switchover_.load()) RETURN_IF_ERROR(to_stop_copy());
    // Only the agent's Switchover makes an end the stream's end.
    const std::atomic<bool>& stop = phase == Phase::kPreCopy ? switchover_ : kNever;
    if (whole_stream) {
      absl::StatusOr<PumpResult> pumped = sender->PumpStreamFd(
          data_fd, phase, idle_return, phase == Phase::kPreCopy ? &p.precopy_bytes : nullptr,
          stop, cancel_);
      if (absl::IsUnimplemented(pumped.status())) {
        whole_stream = false;
        continue;
      }
      count_precopy();
      if (!pumped.ok()) return pumped.status();
      if (pumped->bytes > 0) last_sent = absl::Now();
      if (pumped->end == PumpResult::End::kEof) {
        if (!switchover_.load()) return gave_up();
        if (phase == Phase::kPreCopy) RETURN_IF_ERROR(to_stop_copy());
        break;
      }
      if (pumped->end == PumpResult::End::kIdle && absl::Now() - last_sent > KeepaliveEvery()) {
        // Waiting on the VMM, however long it pauses: the destination hears we are here.
        RETURN_IF_ERROR(sender->Keepalive());
        last_sent = absl::Now();
      }
      continue;  // kStopped: the top of the loop moves to STOP_COPY.
    }
    // Reads never block: a pipe or socket is read for what it holds (its mode is the agent's,
    // not ours to change), any other fd in slices.
    uint64_t budget = kPrecopySlice;
    bool ended = false;
    if (stream_fd) {
      pollfd pf{data_fd, POLLIN | POLLRDHUP, 0};
      const int n = ::poll(&pf, 1, 20);
      if (n < 0 && errno != EINTR) {
        return ErrnoStatus(absl::StrCat("poll(save-data fd ", data_fd, ")"), errno);
      }
      int avail = 0;
      const bool sized = n <= 0 || ::ioctl(data_fd, FIONREAD, &avail) == 0;
      if (n > 0 && (pf.revents & POLLNVAL)) {
        return absl::InternalError(absl::StrCat("poll(save-data fd ", data_fd, "): POLLNVAL"));
      }
      if (n > 0 && (pf.revents & POLLERR)) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (::getsockopt(data_fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err == 0) err = EIO;
        return ErrnoStatus(absl::StrCat("save-data fd ", data_fd, " (poll: POLLERR)"), err);
      }
      if (!sized) {
        budget = kPrecopySlice;  // No FIONREAD here: a read of what is there, at most this.
      } else if (avail > 0) {
        budget = static_cast<uint64_t>(avail);
      } else if (n > 0) {
        ended = true;  // Readable, or hung up, with nothing to read: the writer's end.
      } else {
        budget = 0;  // Nothing now.
      }
    }
    if (ended) {
      if (!switchover_.load()) return gave_up();
      if (phase == Phase::kPreCopy) RETURN_IF_ERROR(to_stop_copy());
      break;
    }
    PumpResult r;
    if (budget > 0) {
      absl::StatusOr<PumpResult> pumped = sender->Pump(data_fd, phase, budget, stop, cancel_);
      count_precopy();
      if (!pumped.ok()) return pumped.status();
      r = *pumped;
      if (r.bytes > 0) last_sent = absl::Now();
      if (!stream_fd && r.end == PumpResult::End::kEof && switchover_.load()) {
        if (phase == Phase::kPreCopy) RETURN_IF_ERROR(to_stop_copy());
        break;  // A STOP_COPY read of 0: the end.
      }
      // Before Switchover, 0 from a file-like fd is "nothing now", in either phase.
      if (r.bytes > 0) continue;
    }
    if (absl::Now() - last_sent > KeepaliveEvery()) {
      // Waiting on the VMM, however long it pauses: the destination hears we are here.
      RETURN_IF_ERROR(sender->Keepalive());
      last_sent = absl::Now();
    }
    if (!stream_fd) {
      absl::MutexLock l(&wake_mu_);
      wake_mu_.AwaitWithTimeout(absl::Condition(&woken), config_.precopy_poll);
    }
  }
  return absl::OkStatus();
}

absl::Status SourceSession::RunDevice(size_t i) {
  DeviceEntry* e = entries_[i];
  DeviceProgress& p = *progress_[i];
  ASSIGN_OR_RETURN(std::unique_ptr<transport::DeviceStreamSender> sender,
                   channel_->Open(static_cast<uint32_t>(i), config_.connect_timeout));
  sender->set_progress_counter(&p.bytes);
  LogStream(i, sender.get());
  MM_LOG(INFO) << "session " << id_ << ": device " << e->name << " connected to "
               << channel_->Describe() << ", stream on " << sender->transport_name();
  SetDeviceTransport(i, sender->transport_name(), sender->security());
  SetPhase(SessionPhase::kPreCopy);

  absl::Status status = [&]() -> absl::Status {
    int data_fd = -1;
    if (!e->runs_fsm()) {
      // Data-fd mode: the agent runs the FSM; move the stream to its end. The session's claim
      // keeps the fd open and in place until the session releases the device.
      data_fd = AgentDataFd(i);
      SetDeviceState(i, "");
      SetDeviceDataPath(i, stream::DataPathName(sender->PlannedDataPath(data_fd)));
      RETURN_IF_ERROR(RunAgentStream(i, data_fd, sender.get()));
    } else {
      MigratableDevice* dev = e->device.get();
      const bool precopy = p.precopy_capable.load();
      if (precopy) {
        {
          absl::MutexLock l(&e->mu);
          ASSIGN_OR_RETURN(data_fds_[i], dev->SetState(MigState::kPreCopy));
        }
        SetDeviceState(i, "PRE_COPY");
        data_fd = data_fds_[i].get();
        SetDeviceDataPath(i, stream::DataPathName(sender->PlannedDataPath(data_fd)));
        absl::Status precopied = RunPrecopy(i, dev, data_fd, sender.get());
        // Every byte sent so far went in PRE_COPY, a failed pump's too.
        p.precopy_bytes = sender->bytes_sent();
        RETURN_IF_ERROR(precopied);
        if (cancel_.load()) return absl::CancelledError("session cancelled");
        RETURN_IF_ERROR(sender->EndPhase(Phase::kPreCopy));
      } else {
        ReadStopCopySize(i, dev);
        auto woken = [this] { return switchover_.load() || cancel_.load(); };
        while (true) {
          {
            absl::MutexLock l(&wake_mu_);
            if (wake_mu_.AwaitWithTimeout(absl::Condition(&woken),
                                          KeepaliveEvery())) {
              break;
            }
          }
          RETURN_IF_ERROR(sender->Keepalive());
        }
      }
      if (cancel_.load()) return absl::CancelledError("session cancelled");
      RETURN_IF_ERROR(QuiesceForSwitchover(i));
      {
        absl::MutexLock l(&e->mu);
        ASSIGN_OR_RETURN(UniqueFd fd, dev->SetState(MigState::kStopCopy));
        if (fd.valid()) data_fds_[i] = std::move(fd);
      }
      data_fd = data_fds_[i].get();
      SetDeviceState(i, "STOP_COPY");
    }
    uint64_t stop_copy_bytes = 0;
    if (e->runs_fsm()) {
      SetDeviceDataPath(i, stream::DataPathName(sender->PlannedDataPath(data_fd)));
      static const std::atomic<bool> kNever{false};
      ASSIGN_OR_RETURN(PumpResult r,
                       sender->Pump(data_fd, Phase::kStopCopy, UINT64_MAX, kNever, cancel_));
      stop_copy_bytes = r.bytes;
    } else {
      stop_copy_bytes = sender->bytes_sent() - p.precopy_bytes.load();
    }
    SetDeviceDataPath(i, stream::DataPathName(sender->data_path_used()));
    RETURN_IF_ERROR(sender->EndStream());
    MM_LOG(INFO) << "session " << id_ << ": device " << e->name << ": stream complete, "
                 << sender->bytes_sent() << " bytes (" << stop_copy_bytes << " in STOP_COPY)";
    SetPhase(SessionPhase::kCommitting);
    RETURN_IF_ERROR(sender->AwaitCommit(config_.stream.idle_timeout * 4, cancel_));
    p.committed = true;
    Touch();  // Watchers see the device committed while the session decides.
    MM_LOG(INFO) << "session " << id_ << ": device " << e->name << ": destination committed";
    absl::StatusOr<bool> decided = AwaitDecision(i, sender.get());
    if (!decided.ok()) {
      p.committed = false;  // Undone: this device resumes here.
      // Another device failed or the agent cancelled: CONFIRM will never go; abandon.
      if (!Abandon()) {
        // Decided to commit meanwhile (the keepalive failed just as the last device
        // committed): past the point of no return.
        decided = true;
      } else {
        return decided.status();
      }
    }
    p.committed = true;
    MarkStopCopyEnd();
    // Past the point of no return: nothing below may resume this device.
    if (absl::Status c = sender->Confirm(); !c.ok()) {
      MM_LOG(WARNING) << "session " << id_ << ": device " << e->name
                      << ": committed, but the CONFIRM did not go out (the destination ends in "
                      << "doubt and its agent settles it; this VM stays stopped): " << c;
    }
    if (e->runs_fsm()) {
      absl::MutexLock l(&e->mu);
      // Leaving the saving group ends the data session; a hypervisor expects the source in STOP.
      // The destination owns the device state now: a failure here must not send the source
      // back to RUNNING (two live copies), so it is reported, not failed on.
      absl::StatusOr<UniqueFd> stopped = e->device->SetState(MigState::kStop);
      data_fds_[i].Reset();
      SetDeviceState(i, MigStateName(e->device->last_known_state()));
      if (!stopped.ok()) {
        MM_LOG(WARNING) << "session " << id_ << ": device " << e->name
                        << ": committed on the destination, but STOP_COPY -> STOP failed here: "
                        << stopped.status();
      }
    }
    return absl::OkStatus();
  }();
  bool lost = false;
  if (!status.ok() && !agent_cancelled_.load()) {
    // The heartbeat was lost, or a timeout fired, first: whatever this device saw next (a
    // cancelled wait) follows from that, and the destination (if it hears) learns that reason.
    // Only a lost peer gets no time for it.
    absl::MutexLock l(&decide_mu_);
    if (!abandoned_for_.ok()) {
      status = abandoned_for_;
      lost = peer_lost_;
    }
  }
  // A destination that is lost gets the ERROR only if it fits in the socket now: waiting for
  // a shut window would only delay the VM's return to RUNNING.
  if (!status.ok()) sender->SendError(status, lost ? absl::ZeroDuration() : absl::Seconds(1));
  NoteResumes(i, sender->resume_stats());  // The bytes replayed after the last resume too.
  return status;
}

}  // namespace migmover
