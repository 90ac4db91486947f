#include "daemon/session/destination_session.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/socket.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "daemon/base/log.h"
#include "transport/base/status_macros.h"
#include "transport/net/socket.h"
#include "transport/peer/handshake.h"
#include "transport/peer/heartbeat_connection.h"
#include "transport/stream/stream_errors.h"

namespace migmover {

absl::StatusOr<std::shared_ptr<DestinationSession>> DestinationSession::Prepare(
    DestinationConfig config, DeviceRegistry* registry) {
  if (config.devices.empty()) return absl::InvalidArgumentError("a session needs devices");
  if (config.devices.size() > wire::kMaxDevicesPerSession) {
    return absl::InvalidArgumentError(
        absl::StrCat("at most ", wire::kMaxDevicesPerSession, " devices per session"));
  }
  if (config.final_state != MigState::kRunning && config.final_state != MigState::kRunningP2P &&
      config.final_state != MigState::kStop) {
    return absl::InvalidArgumentError(absl::StrCat("final state ", MigStateName(config.final_state),
                                                   ": expected RUNNING, RUNNING_P2P or STOP"));
  }
  if (config.transports == nullptr || config.transports->all().empty()) {
    return absl::InvalidArgumentError("a session needs a transport");
  }
  transport::SessionSpec spec;
  spec.session_id = config.session_id;
  spec.device_count = static_cast<uint32_t>(config.devices.size());
  spec.token = config.token;
  spec.tls = config.tls;
  spec.stream = config.stream;
  spec.workers = config.workers;
  std::vector<Channel> channels;
  for (transport::Transport* t : config.transports->all()) {
    ASSIGN_OR_RETURN(std::unique_ptr<transport::DestinationChannel> c, t->StartDestination(spec));
    channels.push_back(Channel{t, std::move(c)});
  }
  ASSIGN_OR_RETURN(std::vector<DeviceEntry*> entries,
                   registry->Claim(config.devices, config.session_id));
  std::shared_ptr<DestinationSession> s(new DestinationSession(config, registry, entries));
  {
    absl::MutexLock l(&s->channels_mu_);
    s->channels_ = std::move(channels);
  }
  for (size_t i = 0; i < entries.size(); ++i) {
    DeviceEntry* e = entries[i];
    absl::Status st;
    if (e->kind == DeviceKind::kSaveDataFd) {
      st = absl::FailedPreconditionError(absl::StrCat(
          "device '", e->name, "' is a save-data fd; a destination needs resume-data"));
    } else if (e->kind == DeviceKind::kResumeDataFd && s->AgentDataFd(i) < 0) {
      st = absl::FailedPreconditionError(absl::StrCat(
          "device '", e->name, "': its resume-data fd was closed when an earlier session ended "
          "(a data fd carries one stream); detach it and attach a new one"));
    } else if (e->runs_fsm()) {
      absl::MutexLock l(&e->mu);
      if (!e->device->features().Supports(config.final_state)) {
        st = absl::InvalidArgumentError(absl::StrCat("device '", e->name, "' has no ",
                                                     MigStateName(config.final_state), " state"));
      } else {
        absl::StatusOr<UniqueFd> fd = e->device->SetState(MigState::kResuming);
        if (fd.ok()) {
          s->data_fds_[i] = std::move(*fd);
          s->SetDeviceState(i, "RESUMING");
        } else {
          st = absl::Status(fd.status().code(),
                            absl::StrCat("device '", e->name, "': ", fd.status().message()));
        }
      }
    }
    if (!st.ok()) {
      // Nothing was migrated: the agent's data fds stay usable for another try.
      for (size_t j = 0; j <= i; ++j) s->Abandon(j, /*close_agent_fd=*/false);
      registry->Release(config.devices, config.session_id);
      s->cancel_ = true;
      s->remaining_ = 0;
      return st;
    }
  }
  MM_LOG(INFO) << "session " << s->id() << ": destination prepared, " << entries.size()
               << " device(s) waiting for the source";
  return s;
}

DestinationSession::DestinationSession(DestinationConfig config, DeviceRegistry* registry,
                                       std::vector<DeviceEntry*> entries)
    : Session(config.session_id, SessionRole::kDestination, config.devices),
      config_(std::move(config)),
      registry_(registry),
      entries_(std::move(entries)),
      data_fds_(entries_.size()),
      connected_(entries_.size()),
      watch_(absl::StrCat("session ", id_), PeerWatch::TimeoutFor(config_.stream),
             [this](absl::Status why) { PeerLost(std::move(why)); }) {
  remaining_ = static_cast<int>(entries_.size());
}

DestinationSession::~DestinationSession() {
  (void)Cancel();  // Refused only when every device is held: nothing is left running then.
  watch_.Stop();
  Join();
}

void DestinationSession::Join() { workers_.Join(); }

absl::StatusOr<std::shared_ptr<transport::DestinationChannel>> DestinationSession::ChannelFor(
    const peer::Hello& hello) {
  ASSIGN_OR_RETURN(transport::Transport * t, config_.transports->ForHello(hello));
  absl::MutexLock l(&channels_mu_);
  for (const Channel& c : channels_) {
    if (c.transport == t) return c.channel;
  }
  return absl::FailedPreconditionError(absl::StrCat("session '", id_, "' is over"));
}

absl::Status DestinationSession::AcceptStream(const peer::Hello& hello, UniqueFd socket,
                                              const std::string& security, bool tls,
                                              absl::Time deadline) {
  absl::Status verdict;
  if (!hello.ProofValid(config_.token)) {
    // The peer hears what it would for a session that does not exist; the log says which.
    (void)peer::SendHelloAck(socket.get(), UnrecognizedSession(), hello.device, deadline);
    return absl::PermissionDeniedError(
        absl::StrCat("session '", id_, "': the HELLO's proof of the secret does not match"));
  } else if (hello.device_count != entries_.size()) {
    verdict = absl::InvalidArgumentError(
        absl::StrCat("session '", id_, "': the source sends ", hello.device_count,
                     " devices, this destination prepared ", entries_.size()));
  } else if (hello.device >= entries_.size()) {
    verdict = absl::InvalidArgumentError(absl::StrCat("device index ", hello.device));
  } else if (IsFinal(phase()) || cancel_.load()) {
    // The source learns why (its proof held): another device's failure, or a cancel.
    const absl::Status why = error();
    verdict = absl::FailedPreconditionError(
        absl::StrCat("session '", id_, "' is over", why.ok() ? "" : ": ", why.message()));
  } else if (hello.heartbeat) {
    return AcceptHeartbeat(std::move(socket), deadline);
  } else if (hello.resume != 0) {
    // A resume goes to the device's stream, which must already be here: never a first
    // connection (it would start the stream from 0 under another nonce).
    absl::StatusOr<std::shared_ptr<transport::DestinationChannel>> c = ChannelFor(hello);
    if (!c.ok()) {
      (void)peer::SendHelloAck(socket.get(), c.status(), hello.device, deadline);
      return c.status();
    }
    absl::Status offered = (*c)->AcceptResume(hello, std::move(socket), security, tls, deadline);
    if (offered.ok()) {
      MM_LOG(INFO) << "session " << id_ << ": device " << hello.device << ": resume "
                   << hello.resume << ", connection " << hello.stream + 1 << " of "
                   << hello.stream_count << " came";
    } else {
      MM_LOG(WARNING) << "session " << id_ << ": device " << hello.device << ": resume "
                      << hello.resume << " refused: " << offered;
    }
    return offered;
  } else if (connected_[hello.device].load()) {
    verdict = absl::AlreadyExistsError(
        absl::StrCat("device ", hello.device, " of session '", id_, "' is already connected"));
  }
  std::shared_ptr<transport::DestinationChannel> channel;
  if (verdict.ok()) {
    absl::StatusOr<std::shared_ptr<transport::DestinationChannel>> c = ChannelFor(hello);
    if (c.ok()) {
      channel = std::move(*c);
    } else {
      verdict = c.status();
    }
  }
  if (!verdict.ok()) {
    (void)peer::SendHelloAck(socket.get(), verdict, hello.device, deadline);
    return verdict;
  }
  // The transport answers the HELLO; no lock of ours is held while it does.
  ASSIGN_OR_RETURN(std::unique_ptr<transport::DeviceStreamReceiver> receiver,
                   channel->Accept(hello, std::move(socket), security, tls, deadline));
  if (receiver == nullptr) return absl::OkStatus();  // More streams of this device to come.
  // A cancel may have abandoned the device meanwhile: exactly one of us takes it.
  if (connected_[hello.device].exchange(true)) return absl::OkStatus();
  SetDeviceTransport(hello.device, receiver->transport_name(), receiver->security());
  SetPhase(SessionPhase::kPreCopy);
  workers_.Start([this, i = hello.device, r = std::move(receiver)]() mutable {
    Run(i, std::move(r));
  });
  return absl::OkStatus();
}

absl::Status DestinationSession::AcceptHeartbeat(UniqueFd socket, absl::Time deadline) {
  absl::Status verdict;
  if (net::IsTcp(socket.get())) {
    verdict = net::TuneDataSocket(socket.get(), 0, "", config_.stream.peer_timeout);
  }
  const bool may_replace = config_.stream.reconnect_window > absl::ZeroDuration();
  bool replacement = false;
  {
    // Taken only by a heartbeat that is answered: a failed one leaves the place to the next.
    absl::MutexLock l(&commit_mu_);
    if (verdict.ok() && heartbeat_ && !may_replace) {
      verdict = absl::AlreadyExistsError(
          absl::StrCat("session '", id_, "' already has its heartbeat connection"));
    }
    replacement = heartbeat_;
    if (verdict.ok()) heartbeat_ = true;
  }
  if (!verdict.ok()) {
    (void)peer::SendHelloAck(socket.get(), verdict, 0, deadline);
    return verdict;
  }
  if (absl::Status sent = peer::SendHelloAck(socket.get(), absl::OkStatus(), 0, deadline);
      !sent.ok()) {
    if (!replacement) {
      absl::MutexLock l(&commit_mu_);
      heartbeat_ = false;
    }
    return sent;
  }
  UniqueFd cut(::fcntl(socket.get(), F_DUPFD_CLOEXEC, 0));
  auto link = std::make_unique<peer::HeartbeatConnection>(
      std::move(socket), peer::HeartbeatConnection::End::kDestination);
  if (replacement) {
    MM_LOG(INFO) << "session " << id_ << ": a new heartbeat from the source connected";
    absl::MutexLock l(&commit_mu_);
    next_heartbeat_ = std::move(link);
    // The watch may still wait on the old one: it ends now, and the watch takes this one.
    if (heartbeat_cut_.valid()) ::shutdown(heartbeat_cut_.get(), SHUT_RDWR);
    heartbeat_cut_ = std::move(cut);
    return absl::OkStatus();
  }
  {
    absl::MutexLock l(&commit_mu_);
    heartbeat_cut_ = std::move(cut);
  }
  MM_LOG(INFO) << "session " << id_ << ": heartbeat from the source connected";
  if (may_replace) {
    watch_.set_replacement(config_.stream.reconnect_window,
                           [this](absl::Time until) { return AwaitHeartbeat(until); });
  }
  workers_.Start([this, link = std::move(link)]() mutable {
    pthread_setname_np(pthread_self(), "mm-dst-watch");
    watch_.WatchSource(link.get(), [this] { return NewlyLoaded(); });
    // A retained session keeps no connection.
    absl::MutexLock l(&commit_mu_);
    next_heartbeat_.reset();
    heartbeat_cut_.Reset();
  });
  return absl::OkStatus();
}

std::unique_ptr<transport::HeartbeatLink> DestinationSession::AwaitHeartbeat(
    absl::Time deadline) {
  absl::MutexLock l(&commit_mu_);
  auto came = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(commit_mu_) {
    return next_heartbeat_ != nullptr;
  };
  while (!came() && !watch_.stopped() && absl::Now() < deadline) {
    commit_mu_.AwaitWithDeadline(absl::Condition(&came),
                                 std::min(deadline, absl::Now() + absl::Milliseconds(100)));
  }
  // A LOADED may have gone down with the old one: the new one says every one again.
  if (next_heartbeat_ != nullptr) resend_loaded_ = true;
  return std::move(next_heartbeat_);
}

std::vector<uint32_t> DestinationSession::NewlyLoaded() {
  std::vector<uint32_t> loaded;
  if (resend_loaded_) {
    // Heard again (the source takes a repeat as nothing).
    resend_loaded_ = false;
    for (size_t i = 0; i < progress_.size(); ++i) {
      if (progress_[i]->initial_loaded.load()) loaded.push_back(static_cast<uint32_t>(i));
    }
  }
  for (size_t i = 0; i < progress_.size(); ++i) {
    DeviceProgress& p = *progress_[i];
    const uint64_t end = p.initial_end.load();
    if (end == DeviceProgress::kUnknownSize || p.initial_loaded.load() || p.bytes.load() < end) {
      continue;
    }
    p.initial_loaded = true;
    MM_LOG(INFO) << "session " << id_ << ": device " << p.name << ": initial precopy data ("
                 << end << " bytes) written into the device; telling the source";
    loaded.push_back(static_cast<uint32_t>(i));
  }
  if (!loaded.empty()) Touch();
  return loaded;
}

void DestinationSession::PeerLost(absl::Status why) {
  // A lost peer is DEADLINE_EXCEEDED (silence) or UNAVAILABLE: never a code the device threads
  // read as the source's own word (ABORTED is its ERROR).
  if (!absl::IsDeadlineExceeded(why)) why = absl::UnavailableError(why.message());
  bool all_committed;
  {
    absl::MutexLock l(&commit_mu_);
    all_committed = commits_ == entries_.size();
    // Before every COMMIT(0) went out the source cannot have decided: no more go.
    if (!all_committed) cancelled_ = true;
    peer_lost_ = why;
  }
  if (IsFinal(phase()) || confirmed_.load()) return;
  if (all_committed) {
    MM_LOG(WARNING) << "session " << id_ << ": " << why << "; every device committed, so the "
                    << "source may have decided: the devices stay stopped, in doubt";
    cancel_ = true;  // Ends the waits for its CONFIRM.
    return;
  }
  MM_LOG(WARNING) << "session " << id_ << ": " << why
                  << "; abandoning the migration, the devices are reset";
  Fail(SIZE_MAX, why);
  if (!cancel_.exchange(true)) AbandonUnconnected();
}

absl::Status DestinationSession::PeerLostStatus() {
  absl::MutexLock l(&commit_mu_);
  return peer_lost_;
}

absl::Status DestinationSession::Cancel() {
  if (phase() == SessionPhase::kSucceeded) {
    return absl::FailedPreconditionError(absl::StrCat(
        "session '", id_, "' already SUCCEEDED: nothing to cancel (its devices run here)"));
  }
  {
    absl::MutexLock l(&commit_mu_);
    if (commits_ == entries_.size()) {
      MM_LOG(INFO) << "session " << id_ << ": cancel requested after every device committed: "
                   << "refused, the source decides";
      return absl::FailedPreconditionError(absl::StrCat(
          "session '", id_, "': too late to cancel, every device committed and is held for the "
          "source's decision (cancel the source; an IN_DOUBT destination is settled with "
          "ResolveSession)"));
    }
    cancelled_ = true;
  }
  if (cancel_.exchange(true)) return absl::OkStatus();
  if (IsFinal(phase())) return absl::OkStatus();
  MM_LOG(INFO) << "session " << id_ << ": cancel requested";
  Fail(SIZE_MAX, absl::CancelledError("session cancelled"));
  AbandonUnconnected();
  return absl::OkStatus();
}

void DestinationSession::AbandonUnconnected() {
  {
    std::vector<std::shared_ptr<transport::DestinationChannel>> channels;
    {
      absl::MutexLock l(&channels_mu_);
      for (const Channel& c : channels_) channels.push_back(c.channel);
    }
    for (auto& c : channels) c->DropPending();  // Close partially connected stream sets.
  }
  // Devices whose source never connected (all its streams) have no worker to abandon them.
  for (size_t i = 0; i < entries_.size(); ++i) {
    if (!connected_[i].exchange(true)) {
      Abandon(i);
      WorkerDone();
    }
  }
}

void DestinationSession::Abandon(size_t i, bool close_agent_fd) {
  DeviceEntry* e = entries_[i];
  data_fds_[i].Reset();
  if (!e->runs_fsm()) {
    // Its reader (the VMM) sees the end now, not when the agent detaches the device.
    if (close_agent_fd) CloseAgentDataFd(i);
    return;
  }
  absl::MutexLock l(&e->mu);
  // The only way out of RESUMING that discards the data is a reset.
  if (absl::Status r = e->device->Reset(); !r.ok()) {
    MM_LOG(ERROR) << "session " << id_ << ": device " << e->name << ": reset failed: " << r;
  }
  SetDeviceState(i, MigStateName(e->device->last_known_state()));
  MM_LOG(INFO) << "session " << id_ << ": device " << e->name << " reset to "
               << MigStateName(e->device->last_known_state());
}

absl::Status DestinationSession::RunConfirmed() {
  const MigState final_state = config_.final_state;
  // Rule 5: with P2P, every device reaches RUNNING_P2P before any runs.
  std::vector<MigState> steps;
  if (final_state == MigState::kRunning) steps.push_back(MigState::kRunningP2P);
  if (final_state != MigState::kStop) steps.push_back(final_state);
  absl::Status first;
  std::vector<bool> failed(entries_.size(), false);
  for (MigState step : steps) {
    for (size_t i = 0; i < entries_.size(); ++i) {
      DeviceEntry* e = entries_[i];
      if (!e->runs_fsm() || failed[i]) continue;
      absl::MutexLock l(&e->mu);
      if (step == MigState::kRunningP2P && !e->device->features().Supports(step)) continue;
      absl::StatusOr<UniqueFd> done = e->device->SetState(step);
      SetDeviceState(i, MigStateName(e->device->last_known_state()));
      if (!done.ok()) {
        failed[i] = true;
        absl::Status st(done.status().code(),
                        absl::StrCat("device '", e->name, "' after the source confirmed: ",
                                     done.status().message()));
        MM_LOG(ERROR) << "session " << id_ << ": " << st;
        Fail(i, st);
        if (first.ok()) first = st;
      }
    }
  }
  MM_LOG(INFO) << "session " << id_ << ": confirmed; " << entries_.size() << " device(s) "
               << (first.ok() ? "now " : "moved to ") << MigStateName(final_state)
               << (first.ok() ? "" : " where they could");
  return first;
}

void DestinationSession::DropChannels() {
  // No device receives any more: do not keep the channels' threads for an ended session.
  std::vector<Channel> gone;
  absl::MutexLock l(&channels_mu_);
  gone.swap(channels_);
}

void DestinationSession::WorkerDone() {
  if (--remaining_ != 0) return;
  watch_.Stop();
  absl::Status doubt;
  if (confirmed_.load()) {
    // The source is past its point of no return: whatever else happened here, the devices run
    // here or nowhere.
    (void)RunConfirmed();  // Its errors are the session's already.
  } else if (!error().ok()) {
    // The migration failed as a whole and the VM stays on the source: devices that had
    // committed their own stream are reset too, not left holding a state nobody uses.
    for (size_t i = 0; i < entries_.size(); ++i) {
      if (progress_[i]->committed.exchange(false)) Abandon(i);
    }
  } else {
    absl::MutexLock l(&doubt_mu_);
    doubt = doubt_;
  }
  if (!doubt.ok()) {
    // Neither run nor reset: the VM may be running on the source, or the source may have
    // stopped for good. The devices stay stopped, and claimed, for the agent to settle.
    MM_LOG(WARNING) << "session " << id_ << ": IN_DOUBT: every device committed and held in "
                    << "STOP, no word from the source (" << doubt
                    << "); the agent settles it (ResolveSession)";
    Finish(doubt);
    DropChannels();
    return;
  }
  registry_->Release(config_.devices, id_);
  Finish();
  DropChannels();
}

absl::Status DestinationSession::Resolve(bool run) {
  absl::MutexLock l(&doubt_mu_);
  const SessionPhase p = phase();
  if (p != SessionPhase::kInDoubt) {
    return absl::FailedPreconditionError(absl::StrCat(
        "session '", id_, "' is ", SessionPhaseName(p), "; only an IN_DOUBT destination is "
        "settled"));
  }
  absl::Status outcome;
  if (run) {
    MM_LOG(INFO) << "session " << id_ << ": the agent says the source passed its point of no "
                 << "return: running the devices";
    outcome = RunConfirmed();
  } else {
    MM_LOG(INFO) << "session " << id_ << ": the agent says the VM stays on the source: "
                 << "resetting the devices";
    for (size_t i = 0; i < entries_.size(); ++i) {
      if (progress_[i]->committed.exchange(false)) Abandon(i);
    }
    outcome = absl::AbortedError(
        absl::StrCat("settled by the agent: the VM stays on the source (", doubt_.message(), ")"));
  }
  registry_->Release(config_.devices, id_);
  LeaveDoubt(outcome);
  return run ? outcome : absl::OkStatus();
}

int DestinationSession::AgentDataFd(size_t i) {
  absl::MutexLock l(&entries_[i]->mu);
  return entries_[i]->data_fd.get();
}

void DestinationSession::CloseAgentDataFd(size_t i) {
  absl::MutexLock l(&entries_[i]->mu);
  entries_[i]->data_fd.Reset();
}

namespace {

// What checked a received stream, for the status and the log.
std::string IntegrityName(const transport::ReceiveResult& r) {
  if (r.digest_checked && r.aead) return absl::StrCat("keyed digest (Poly1305) and ", r.aead_name);
  if (r.digest_checked) return "keyed digest (Poly1305)";
  if (r.aead) return r.aead_name;
  return "nothing";
}

}  // namespace

void DestinationSession::Run(size_t i, std::unique_ptr<transport::DeviceStreamReceiver> receiver) {
  pthread_setname_np(pthread_self(), absl::StrCat("mm-dst-dev", i).substr(0, 15).c_str());
  DeviceEntry* e = entries_[i];
  DeviceProgress& p = *progress_[i];
  absl::Status status = [&]() -> absl::Status {
    const int fd = e->runs_fsm() ? data_fds_[i].get() : AgentDataFd(i);
    SetDeviceDataPath(i, stream::DataPathName(receiver->PlannedDataPath(fd)));
    receiver->set_progress_counter(&p.bytes);
    LogStream(i, receiver.get());
    receiver->set_initial_data_end(&p.initial_end);
    absl::StatusOr<transport::ReceiveResult> received = receiver->Receive(fd, cancel_);
    SetDeviceDataPath(i, stream::DataPathName(receiver->data_path_used()));
    ASSIGN_OR_RETURN(transport::ReceiveResult r, std::move(received));
    if (!r.checked()) {
      // Verified means checked: bytes that neither TLS nor the keyed digest covered are not
      // committed, whatever the source says (a relay can set the digest kind to none).
      return absl::DataLossError(absl::StrCat(
          "device '", e->name, "': nothing checked the stream's ", r.total_bytes,
          " bytes (a plaintext connection and no keyed digest from the source): not committed"));
    }
    p.digest_checked = r.digest_checked;
    SetDeviceIntegrity(i, IntegrityName(r));
    MM_LOG(INFO) << "session " << id_ << ": device " << e->name << ": stream received, "
                 << r.total_bytes << " bytes, checked by " << IntegrityName(r);
    SetPhase(SessionPhase::kCommitting);
    if (e->runs_fsm()) {
      absl::MutexLock l(&e->mu);
      // QEMU closes the resuming fd before RESUMING -> STOP; so do we.
      data_fds_[i].Reset();
      // Loaded, and held stopped until the source confirms.
      absl::StatusOr<UniqueFd> done = e->device->SetState(MigState::kStop);
      if (!done.ok()) {
        return absl::Status(
            done.status().code(),
            absl::StrCat("device '", e->name, "' commit: ", done.status().message()));
      }
      SetDeviceState(i, MigStateName(MigState::kStop));
    } else {
      CloseAgentDataFd(i);  // The agent's FSM sees the end of the written stream.
    }
    p.committed = true;
    Touch();
    MM_LOG(INFO) << "session " << id_ << ": device " << e->name << " committed, "
                 << (e->runs_fsm() ? "held in STOP" : "data fd closed")
                 << " until the source confirms";
    return absl::OkStatus();
  }();
  if (status.ok()) {
    // Counted before the COMMIT(0) goes: once every device's has, the source may decide at any
    // moment, and a cancel here could reset devices it already gave up.
    absl::MutexLock l(&commit_mu_);
    if (cancelled_) {
      status = absl::CancelledError("session cancelled");
      p.committed = false;  // The failure path below resets it.
    } else {
      ++commits_;
    }
  }
  if (absl::IsCancelled(status)) {
    // The heartbeat was lost: that, not a cancel, is why this device stopped.
    if (absl::Status lost = PeerLostStatus(); !lost.ok()) status = lost;
  }
  // A device stopped because another one failed is not a cancel the agent asked for: its
  // source learns what really failed, so it fails (not cancels) with that reason.
  absl::Status verdict = status;
  if (status.code() == absl::StatusCode::kCancelled) {
    if (absl::Status first = error(); !first.ok() && first.code() != absl::StatusCode::kCancelled) {
      verdict = absl::AbortedError(
          absl::StrCat("another device of the session failed: ", first.message()));
    }
  }
  // This device's own failure is recorded before the source hears of it: the source then
  // abandons every other stream, and their "source abandoned the stream" must not be what the
  // session reports as its error.
  if (!status.ok() && !absl::IsCancelled(status)) Fail(i, status);
  // Lingering lets a live source read why; a source whose heartbeat is lost, or whose
  // connection failed or went silent, will not read it soon, if ever (the verdict still goes
  // into the socket for a source that was only stopped).
  const absl::Status failed = error();  // What failed the session, if it failed.
  // A device's own failure (its data fd's EPIPE is UNAVAILABLE too) leaves the source able to
  // hear: closing at once would reset the connection under the verdict.
  auto connection_failed = [](const absl::Status& s) {
    return (absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s)) && !stream::IsDeviceSide(s);
  };
  const bool unheard =
      !PeerLostStatus().ok() || connection_failed(status) || connection_failed(failed);
  absl::Status sent =
      receiver->SendCommit(verdict, unheard ? absl::ZeroDuration() : absl::Seconds(2));
  if (!sent.ok() && status.ok()) {
    MM_LOG(WARNING) << "session " << id_ << ": device " << e->name
                    << ": committed but the COMMIT may not have reached the source: " << sent;
  }
  if (status.ok()) {
    // The source's word: CONFIRM (it is past its point of no return), or ERROR (it abandoned
    // the migration and runs the VM), or nothing (its KEEPALIVEs stop: in doubt).
    absl::Status settled = receiver->AwaitConfirm(config_.stream.idle_timeout, cancel_);
    if (absl::IsCancelled(settled)) {
      if (absl::Status lost = PeerLostStatus(); !lost.ok()) settled = lost;
    }
    bool premature = false;
    if (settled.ok()) {
      absl::MutexLock l(&commit_mu_);
      if (commits_ != entries_.size()) {
        // The source confirms only after every device's COMMIT(0), each counted here first:
        // it cannot have decided, so this is a broken source, and nothing runs.
        premature = true;
        settled = absl::DataLossError(absl::StrCat(
            "device '", e->name, "': the source sent CONFIRM while ",
            entries_.size() - commits_, " device(s) had not committed"));
      }
    }
    if (premature) {
      status = settled;
    } else if (settled.ok()) {
      confirmed_ = true;
      // The decision is the session's: the other devices need not wait for their own CONFIRM
      // (a source that stopped between two CONFIRMs would keep them waiting an idle timeout).
      cancel_ = true;
    } else if (confirmed_.load()) {
      // Another device's CONFIRM came: the source decided for every device.
    } else if (settled.code() == absl::StatusCode::kAborted) {
      status = settled;  // The source's ERROR: it abandoned the migration and keeps the VM.
    } else {
      MM_LOG(WARNING) << "session " << id_ << ": device " << e->name
                      << ": committed, no CONFIRM from the source: " << settled;
      absl::MutexLock l(&doubt_mu_);
      if (doubt_.ok()) {
        doubt_ = absl::Status(settled.code(),
                              absl::StrCat("device '", e->name, "' committed, the source's "
                                           "CONFIRM never came: ", settled.message()));
      }
    }
  }
  NoteResumes(i, receiver->resume_stats());
  receiver.reset();  // Its connections close before the device is abandoned or released.
  if (!status.ok()) {
    Fail(i, status);
    Abandon(i);
    // One device failing fails the migration: stop the other streams too.
    if (!cancel_.exchange(true)) AbandonUnconnected();
  }
  WorkerDone();
}

}  // namespace migmover
