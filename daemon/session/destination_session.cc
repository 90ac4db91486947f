#include "daemon/session/destination_session.h"

#include <openssl/crypto.h>
#include <pthread.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "daemon/base/log.h"
#include "transport/base/status_macros.h"
#include "transport/peer/handshake.h"
#include "transport/stream/stream_receiver.h"
#include "transport/uring/ring.h"

namespace migmover {

namespace {
// Each device's share of its pump worker's buffers: every device of a worker receives for the
// whole migration at once, so shares must add up to the pool. A striped receive wants two per
// connection; with a smaller share each connection still gets one.
uint32_t DestinationBuffersPerDevice(const DestinationConfig& config) {
  return std::min<uint32_t>(64, std::max<uint32_t>(config.stream.buffers, 4));
}
}  // namespace

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
  ASSIGN_OR_RETURN(
      std::vector<std::unique_ptr<stream::PumpWorker>> pump_workers,
      stream::PumpWorker::StartPool(config.workers, config.devices.size(),
                                    DestinationBuffersPerDevice(config), config.stream.chunk_size));
  ASSIGN_OR_RETURN(std::vector<DeviceEntry*> entries,
                   registry->Claim(config.devices, config.session_id));
  std::shared_ptr<DestinationSession> s(new DestinationSession(config, registry, entries));
  s->pump_workers_ = std::move(pump_workers);
  for (size_t i = 0; i < entries.size(); ++i) {
    DeviceEntry* e = entries[i];
    absl::Status st;
    if (e->kind == DeviceKind::kSaveDataFd) {
      st = absl::FailedPreconditionError(absl::StrCat(
          "device '", e->name, "' is a save-data fd; a destination needs resume-data"));
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
      for (size_t j = 0; j <= i; ++j) s->Abandon(j);
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
      pending_(entries_.size()) {
  remaining_ = static_cast<int>(entries_.size());
}

DestinationSession::~DestinationSession() {
  Cancel();
  Join();
  pump_workers_.clear();  // After every device thread: their receives ran on these.
}

void DestinationSession::Join() {
  std::vector<std::thread> workers;
  {
    absl::MutexLock l(&threads_mu_);
    workers.swap(workers_);
  }
  for (auto& t : workers) {
    if (t.joinable()) t.join();
  }
}

absl::Status DestinationSession::AcceptStream(const peer::Hello& hello, UniqueFd socket) {
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  absl::Status verdict;
  std::vector<UniqueFd> complete;  // Set when this connection completes its device's set.
  std::unique_ptr<stream::DeviceStreamReceiver> link;  // The stream's end on a DPDK link.
  {
    absl::MutexLock l(&threads_mu_);
    if (CRYPTO_memcmp(hello.token.data(), config_.token.data(), config_.token.size()) != 0) {
      verdict = absl::PermissionDeniedError(
          absl::StrCat("session '", id_, "': the source's token does not match"));
    } else if (hello.device_count != entries_.size()) {
      verdict = absl::InvalidArgumentError(
          absl::StrCat("session '", id_, "': the source sends ", hello.device_count,
                       " devices, this destination prepared ", entries_.size()));
    } else if (hello.device >= entries_.size()) {
      verdict = absl::InvalidArgumentError(absl::StrCat("device index ", hello.device));
    } else if (IsFinal(phase()) || cancel_.load() || connected_[hello.device].load()) {
      verdict = connected_[hello.device].load() && !IsFinal(phase()) && !cancel_.load()
                    ? absl::AlreadyExistsError(absl::StrCat(
                          "device ", hello.device, " of session '", id_, "' is already connected"))
                    : absl::FailedPreconditionError(absl::StrCat("session '", id_, "' is over"));
    } else {
      std::vector<UniqueFd>& group = pending_[hello.device];
      if (group.empty()) group.resize(hello.stream_count);
      if (group.size() != hello.stream_count) {
        verdict = absl::InvalidArgumentError(
            absl::StrCat("device ", hello.device, ": stream ", hello.stream, " says ",
                         hello.stream_count, " streams, an earlier one said ", group.size()));
      } else if (group[hello.stream].valid()) {
        verdict = absl::AlreadyExistsError(absl::StrCat("device ", hello.device, " stream ",
                                                        hello.stream, " is already connected"));
      } else if (hello.link != 0 && config_.dpdk == nullptr) {
        verdict = absl::FailedPreconditionError(
            absl::StrCat("the source sends device ", hello.device, " over DPDK link ", hello.link,
                         ", but this daemon has no DPDK port (start migmoverd with --dpdk_port)"));
      } else if (hello.link != 0) {
        // Attached before the answer, so the link's first frames find their queue. The HELLO
        // connection stays open while the stream runs: watched, it tells at once when the
        // source is gone.
        auto opened = config_.dpdk->OpenReceiver(hello.link, hello.device, config_.stream,
                                                 socket.get(), absl::Seconds(2));
        if (opened.ok()) {
          link = std::move(*opened);
        } else {
          verdict = opened.status();
        }
      }
    }
    absl::Status acked = peer::SendHelloAck(socket.get(), verdict, hello.device, deadline);
    if (!verdict.ok()) return verdict;
    if (!acked.ok()) return acked;  // This stream may connect again.
    SetDeviceTransport(hello.device, hello.link != 0 ? absl::StrCat("dpdk link ", hello.link)
                                                     : TcpTransportName(hello.stream_count));
    std::vector<UniqueFd>& group = pending_[hello.device];
    group[hello.stream] = std::move(socket);
    if (std::all_of(group.begin(), group.end(), [](const UniqueFd& fd) { return fd.valid(); })) {
      // A cancel may have abandoned the device meanwhile: exactly one of us takes it.
      if (!connected_[hello.device].exchange(true)) {
        complete.swap(group);
      } else {
        group.clear();
      }
    }
  }
  if (complete.empty()) return absl::OkStatus();  // More streams of this device to come.
  SetPhase(SessionPhase::kPreCopy);
  absl::MutexLock l(&threads_mu_);
  workers_.emplace_back(
      [this, i = hello.device, socks = std::move(complete), link = std::move(link)]() mutable {
        Run(i, std::move(socks), std::move(link));
      });
  return absl::OkStatus();
}

void DestinationSession::Cancel() {
  if (cancel_.exchange(true)) return;
  if (IsFinal(phase())) return;
  MM_LOG(INFO) << "session " << id_ << ": cancel requested";
  Fail(SIZE_MAX, absl::CancelledError("session cancelled"));
  AbandonUnconnected();
}

void DestinationSession::AbandonUnconnected() {
  // Devices whose source never connected (all its streams) have no worker to abandon them.
  for (size_t i = 0; i < entries_.size(); ++i) {
    {
      absl::MutexLock l(&threads_mu_);
      pending_[i].clear();  // Close partially connected stream sets.
    }
    if (!connected_[i].exchange(true)) {
      Abandon(i);
      WorkerDone();
    }
  }
}

void DestinationSession::Abandon(size_t i) {
  DeviceEntry* e = entries_[i];
  data_fds_[i].Reset();
  if (!e->runs_fsm()) return;
  absl::MutexLock l(&e->mu);
  // The only way out of RESUMING that discards the data is a reset.
  if (absl::Status r = e->device->Reset(); !r.ok()) {
    MM_LOG(ERROR) << "session " << id_ << ": device " << e->name << ": reset failed: " << r;
  }
  SetDeviceState(i, MigStateName(e->device->last_known_state()));
  MM_LOG(INFO) << "session " << id_ << ": device " << e->name << " reset to "
               << MigStateName(e->device->last_known_state());
}

void DestinationSession::WorkerDone() {
  if (--remaining_ == 0) {
    if (!error().ok()) {
      // The migration failed as a whole and the VM stays on the source: devices that had
      // committed their own stream are reset too, not left running a state nobody uses.
      for (size_t i = 0; i < entries_.size(); ++i) {
        if (progress_[i]->committed.exchange(false)) Abandon(i);
      }
    }
    registry_->Release(config_.devices, id_);
    Finish();
    pump_workers_.clear();  // No device receives any more.
  }
}

void DestinationSession::Run(size_t i, std::vector<UniqueFd> sockets,
                             std::unique_ptr<stream::DeviceStreamReceiver> link) {
  pthread_setname_np(pthread_self(), absl::StrCat("mm-dst-dev", i).substr(0, 15).c_str());
  DeviceEntry* e = entries_[i];
  DeviceProgress& p = *progress_[i];
  std::unique_ptr<uring::Ring> ring;  // Before the receiver that uses it: goes last.
  std::unique_ptr<stream::DeviceStreamReceiver> receiver;
  absl::Status status = [&]() -> absl::Status {
    const int fd = e->runs_fsm() ? data_fds_[i].get() : e->data_fd.get();
    if (link) {
      // The stream comes over DPDK; the connection only carried the HELLO exchange.
      receiver = std::move(link);
      SetDeviceDataPath(i, stream::DataPathName(stream::DataPath::kCopy));
    } else {
      ASSIGN_OR_RETURN(ring, uring::Ring::Create(64));
      ASSIGN_OR_RETURN(std::unique_ptr<stream::StreamReceiver> tcp,
                       stream::StreamReceiver::Create(ring.get(), std::move(sockets),
                                                      static_cast<uint32_t>(i), config_.stream));
      if (!pump_workers_.empty()) {
        tcp->set_worker(pump_workers_[i % pump_workers_.size()].get(),
                        DestinationBuffersPerDevice(config_));
      }
      receiver = std::move(tcp);
      SetDeviceDataPath(i, stream::DataPathName(stream::ResolveDataPath(
                               config_.stream.data_path, fd, config_.stream.auto_spliceable)));
    }
    receiver->set_progress_counter(&p.bytes);
    absl::StatusOr<stream::ReceiveResult> received = receiver->Receive(fd, cancel_);
    SetDeviceDataPath(i, stream::DataPathName(receiver->data_path_used()));
    ASSIGN_OR_RETURN(stream::ReceiveResult r, std::move(received));
    p.digest_checked = r.digest_checked;
    MM_LOG(INFO) << "session " << id_ << ": device " << e->name << ": stream received, "
                 << r.total_bytes << " bytes, digest "
                 << (r.digest_checked ? "verified" : "not checked (spliced)");
    SetPhase(SessionPhase::kCommitting);
    if (e->runs_fsm()) {
      absl::MutexLock l(&e->mu);
      // QEMU closes the resuming fd before RESUMING -> STOP; so do we.
      data_fds_[i].Reset();
      absl::StatusOr<UniqueFd> done = e->device->SetState(config_.final_state);
      if (!done.ok()) {
        return absl::Status(
            done.status().code(),
            absl::StrCat("device '", e->name, "' commit: ", done.status().message()));
      }
      SetDeviceState(i, MigStateName(config_.final_state));
    } else {
      e->data_fd.Reset();  // The agent's FSM sees the end of the written stream.
    }
    p.committed = true;
    MM_LOG(INFO) << "session " << id_ << ": device " << e->name << " committed, now "
                 << (e->runs_fsm() ? MigStateName(config_.final_state) : "closed");
    return absl::OkStatus();
  }();
  if (receiver) {
    absl::Status sent = receiver->SendCommit(status);
    if (!sent.ok() && status.ok()) {
      MM_LOG(WARNING) << "session " << id_ << ": device " << e->name
                      << ": committed but the COMMIT did not reach the source: " << sent;
    }
  }
  if (!status.ok()) {
    Fail(i, status);
    Abandon(i);
    // One device failing fails the migration: stop the other streams too.
    if (!cancel_.exchange(true)) AbandonUnconnected();
  }
  WorkerDone();
}

}  // namespace migmover
