#include "daemon/api/migmover_service.h"

#include <algorithm>

#include <openssl/evp.h>

#include "absl/strings/str_cat.h"
#include "api/peer_wire.h"
#include "daemon/api/request_bounds.h"
#include "daemon/base/log.h"
#include "daemon/base/version.h"
#include "daemon/device/fsm_path.h"
#include "daemon/device/ioctl_seam.h"
#include "daemon/device/sim/sim_driver.h"
#include "daemon/device/vfio_device.h"
#include "daemon/session/destination_session.h"
#include "daemon/session/session_secret.h"
#include "daemon/session/source_session.h"
#include "transport/base/status_macros.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "transport/net/socket.h"

namespace migmover {
namespace {

v1::Device::Kind KindToProto(DeviceKind k) {
  switch (k) {
    case DeviceKind::kVfio:
      return v1::Device::VFIO_DEVICE;
    case DeviceKind::kSimulated:
      return v1::Device::SIMULATED;
    case DeviceKind::kSaveDataFd:
      return v1::Device::SAVE_DATA_FD;
    case DeviceKind::kResumeDataFd:
      return v1::Device::RESUME_DATA_FD;
  }
  return v1::Device::KIND_UNSPECIFIED;
}

void FillDevice(const DeviceInfo& info, v1::Device* d) {
  d->set_name(info.name);
  d->set_kind(KindToProto(info.kind));
  if (info.kind == DeviceKind::kVfio || info.kind == DeviceKind::kSimulated) {
    if (info.features.stop_copy()) d->add_features("stop_copy");
    if (info.features.p2p()) d->add_features("p2p");
    if (info.features.pre_copy()) d->add_features("pre_copy");
    d->set_state(MigStateName(info.state));
  }
  d->set_session_id(info.session_id);
  d->set_description(info.description);
}

v1::SessionStatus::Phase PhaseToProto(SessionPhase p) {
  switch (p) {
    case SessionPhase::kPrepared:
      return v1::SessionStatus::PREPARED;
    case SessionPhase::kConnecting:
      return v1::SessionStatus::CONNECTING;
    case SessionPhase::kPreCopy:
      return v1::SessionStatus::PRE_COPY;
    case SessionPhase::kStopCopy:
      return v1::SessionStatus::STOP_COPY;
    case SessionPhase::kCommitting:
      return v1::SessionStatus::COMMITTING;
    case SessionPhase::kSucceeded:
      return v1::SessionStatus::SUCCEEDED;
    case SessionPhase::kFailed:
      return v1::SessionStatus::FAILED;
    case SessionPhase::kCancelled:
      return v1::SessionStatus::CANCELLED;
    case SessionPhase::kInDoubt:
      return v1::SessionStatus::IN_DOUBT;
  }
  return v1::SessionStatus::PHASE_UNSPECIFIED;
}

void FillStatus(const SessionSnapshot& s, v1::SessionStatus* out) {
  out->set_session_id(s.id);
  out->set_role(s.role == SessionRole::kSource ? v1::SessionStatus::SOURCE
                                               : v1::SessionStatus::DESTINATION);
  out->set_phase(PhaseToProto(s.phase));
  out->set_bytes_moved(s.bytes_moved);
  out->set_precopy_bytes(s.precopy_bytes);
  out->set_stop_copy_bytes(s.stop_copy_bytes);
  out->set_pending_bytes(s.pending_bytes);
  out->set_rate_bytes_per_second(s.rate_bytes_per_second);
  out->set_expected_downtime_seconds(s.expected_downtime_seconds);
  out->set_precopy_rounds(s.precopy_rounds);
  out->set_stop_copy_seconds(s.stop_copy_seconds);
  out->set_elapsed_seconds(s.elapsed_seconds);
  if (!s.error.ok()) {
    out->set_error(std::string(s.error.message()));
    out->set_error_code(static_cast<int32_t>(s.error.code()));
  }
  out->set_verified(s.verified);
  out->set_version(s.version);
  out->set_bandwidth_bytes_per_second(s.bandwidth);
  out->set_stop_copy_size_bytes(s.stop_copy_size);
  out->set_stop_copy_size_known(s.stop_copy_size_known);
  out->set_transfer_rate_bytes_per_second(s.transfer_rate_bytes_per_second);
  out->set_downtime_limit_seconds(s.downtime_limit_seconds);
  out->set_switchover_ready(s.switchover_ready);
  out->set_reconnections(s.reconnections);
  out->set_time_lost_seconds(s.time_lost_seconds);
  out->set_replayed_bytes(s.replayed_bytes);
  for (const auto& d : s.devices) {
    v1::DeviceProgress* p = out->add_devices();
    p->set_name(d.name);
    p->set_state(d.state);
    p->set_bytes(d.bytes);
    p->set_precopy_bytes(d.precopy_bytes);
    p->set_pending_bytes(d.pending_bytes);
    p->set_data_path(d.data_path);
    p->set_transport(d.transport);
    p->set_security(d.security);
    p->set_integrity(d.integrity);
    p->set_digest_checked(d.digest_checked);
    p->set_committed(d.committed);
    p->set_error(d.error);
    p->set_stop_copy_size_bytes(d.stop_copy_size);
    p->set_stop_copy_size_known(d.stop_copy_size_known);
    p->set_initial_data_sent(d.initial_sent);
    p->set_initial_data_loaded(d.initial_loaded);
    p->set_rate_bytes_per_second(d.rate_bytes_per_second);
    p->set_expected_downtime_seconds(d.expected_downtime_seconds);
    p->set_reconnections(d.reconnections);
    p->set_time_lost_seconds(d.time_lost_seconds);
    p->set_replayed_bytes(d.replayed_bytes);
  }
}

// What makes two Prepare/Start requests "the same" (an idempotent retry): a digest of the
// whole request, secret included, so the map of sessions keeps no second copy of it.
absl::StatusOr<std::string> Fingerprint(const google::protobuf::Message& request) {
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream out(&bytes);
    google::protobuf::io::CodedOutputStream coded(&out);
    coded.SetSerializationDeterministic(true);
    request.SerializeToCodedStream(&coded);
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (EVP_Digest(bytes.data(), bytes.size(), digest, &size, EVP_sha256(), nullptr) != 1) {
    return absl::InternalError("EVP_Digest(SHA-256, request) failed");
  }
  return std::string(reinterpret_cast<char*>(digest), size);
}

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  // The last guard against echoing a request at length: gRPC carries the message in a header,
  // and one past its limit turns the answer into RESOURCE_EXHAUSTED.
  constexpr size_t kMaxMessage = 2048;
  std::string message(status.message().substr(0, kMaxMessage));
  if (status.message().size() > kMaxMessage) absl::StrAppend(&message, "...");
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::move(message));
}

#define MM_CHECK_BOUNDS(req)                                                  \
  do {                                                                        \
    if (absl::Status bounds = CheckRequestBounds(*(req)); !bounds.ok()) {     \
      return ToGrpcStatus(bounds);                                            \
    }                                                                         \
  } while (0)

absl::StatusOr<stream::StreamOptions> MigmoverService::StreamOptionsFrom(
    const v1::TransferOptions& o) {
  stream::StreamOptions s = defaults_.stream;
  if (!o.data_path().empty()) {
    ASSIGN_OR_RETURN(s.data_path, stream::ParseDataPath(o.data_path()));
  }
  if (s.data_path == stream::DataPath::kSplice && defaults_.tls == nullptr) {
    // Spliced bytes never reach userspace, where the keyed digest is computed: without TLS's
    // AEAD nothing would check them (api/PEER_PROTOCOL.md, Integrity).
    return absl::FailedPreconditionError(
        "data path splice needs TLS on the peer connections: this daemon runs them in the "
        "clear (--plaintext_peers), where only the keyed digest checks a stream, and it must "
        "see every byte; use copy or auto");
  }
  if (o.chunk_size() != 0) {
    if (o.chunk_size() < 4096 || o.chunk_size() > wire::kMaxDataLength) {
      return absl::InvalidArgumentError(
          absl::StrCat("chunk_size ", o.chunk_size(), " outside 4096..", wire::kMaxDataLength));
    }
    s.chunk_size = o.chunk_size();
  }
  if (o.idle_timeout_ms() != 0) s.idle_timeout = absl::Milliseconds(o.idle_timeout_ms());
  if (o.has_reconnect_window_ms()) {
    if (o.reconnect_window_ms() > 600'000) {
      return absl::InvalidArgumentError(absl::StrCat(
          "reconnect_window_ms ", o.reconnect_window_ms(), " outside 0..600000"));
    }
    s.reconnect_window = absl::Milliseconds(o.reconnect_window_ms());
  }
  if (s.data_path == stream::DataPath::kSplice) {
    // Spliced bytes are nowhere to send again, and only the copy path ends a receive with
    // what it took written: a splice stream does not resume.
    if (o.reconnect_window_ms() > 0) {
      return absl::FailedPreconditionError(
          "data path splice cannot resume a stream: use copy or auto with a reconnect window, "
          "or set reconnect_window_ms to 0");
    }
    s.reconnect_window = absl::ZeroDuration();
  }
  // Only a stream that keeps what the destination has not acknowledged can resume.
  s.replay_bytes = s.reconnect_window > absl::ZeroDuration() ? defaults_.replay_bytes : 0;
  if (o.has_send_zc()) s.send_zc = o.send_zc();
  if (o.pipe_size() != 0) {
    if (o.pipe_size() < 4096 || o.pipe_size() > (64u << 20)) {
      return absl::InvalidArgumentError(
          absl::StrCat("pipe_size ", o.pipe_size(), " outside 4096..67108864"));
    }
    s.pipe_size = o.pipe_size();
  }
  return s;
}

absl::StatusOr<std::unique_ptr<DeviceEntry>> MigmoverService::MakeEntry(
    const v1::AttachDeviceRequest& req) {
  RETURN_IF_ERROR(DeviceRegistry::CheckName(req.name()));
  auto entry = std::make_unique<DeviceEntry>();
  entry->name = req.name();
  switch (req.source_case()) {
    case v1::AttachDeviceRequest::kSimulated: {
      ASSIGN_OR_RETURN(sim::SimDeviceSpec spec, sim::ParseSimDeviceSpec(req.simulated()));
      // A taken name is ALREADY_EXISTS whatever memory is left (Add checks again, atomically).
      if (registry_->Info(req.name()).ok()) {
        return absl::AlreadyExistsError(
            absl::StrCat("a device named '", req.name(), "' is already attached"));
      }
      if (defaults_.memory != nullptr) {
        ASSIGN_OR_RETURN(entry->memory,
                         defaults_.memory->Reserve(
                             spec.BookkeepingBytes(),
                             absl::StrCat("simulated device '", req.name(), "' (",
                                          (spec.state_size + spec.chunk_size - 1) / spec.chunk_size,
                                          " chunks of bookkeeping",
                                          spec.content == sim::SimDeviceSpec::Content::kImage
                                              ? " and its content image"
                                              : "",
                                          ")")));
      }
      entry->kind = DeviceKind::kSimulated;
      ASSIGN_OR_RETURN(entry->device, sim::OpenSimulatedDevice(spec, &entry->sim));
      return entry;
    }
    case v1::AttachDeviceRequest::kFdHandle: {
      if (intake_ == nullptr) return absl::FailedPreconditionError("fd intake is disabled");
      ASSIGN_OR_RETURN(ReceivedFd received, intake_->Take(req.fd_handle()));
      switch (received.purpose) {
        case FdPurpose::kVfioDevice: {
          entry->kind = DeviceKind::kVfio;
          // The kernel seam is process-wide: a non-owning shared_ptr.
          std::shared_ptr<IoctlSeam> seam(&KernelIoctlSeam(), [](IoctlSeam*) {});
          ASSIGN_OR_RETURN(entry->device, VfioDevice::Open(std::move(received.fd), seam));
          return entry;
        }
        case FdPurpose::kSaveData:
        case FdPurpose::kResumeData: {
          entry->kind = received.purpose == FdPurpose::kSaveData ? DeviceKind::kSaveDataFd
                                                                 : DeviceKind::kResumeDataFd;
          absl::MutexLock l(&entry->mu);  // Not shared yet; the field's rule holds anyway.
          entry->data_fd = std::move(received.fd);
          return entry;
        }
      }
      return absl::InternalError("unknown fd purpose");
    }
    default:
      return absl::InvalidArgumentError("AttachDevice needs fd_handle or simulated");
  }
}

grpc::Status MigmoverService::AttachDevice(grpc::ServerContext*, const v1::AttachDeviceRequest* req,
                                           v1::Device* resp) {
  MM_CHECK_BOUNDS(req);
  absl::StatusOr<std::unique_ptr<DeviceEntry>> entry = MakeEntry(*req);
  if (!entry.ok()) {
    MM_LOG(WARNING) << "AttachDevice " << req->name() << ": " << entry.status();
    return ToGrpcStatus(entry.status());
  }
  std::string name = (*entry)->name;
  if (absl::Status s = registry_->Add(std::move(*entry)); !s.ok()) return ToGrpcStatus(s);
  auto info = registry_->Info(name);
  if (!info.ok()) return ToGrpcStatus(info.status());
  MM_LOG(INFO) << "attached device " << name << ": " << info->description;
  FillDevice(*info, resp);
  return grpc::Status::OK;
}

grpc::Status MigmoverService::DetachDevice(grpc::ServerContext*, const v1::DetachDeviceRequest* req,
                                           v1::Device* resp) {
  MM_CHECK_BOUNDS(req);
  auto info = registry_->Remove(req->name());
  if (!info.ok()) return ToGrpcStatus(info.status());
  MM_LOG(INFO) << "detached device " << req->name();
  FillDevice(*info, resp);
  return grpc::Status::OK;
}

grpc::Status MigmoverService::ListDevices(grpc::ServerContext*, const v1::ListDevicesRequest*,
                                          v1::ListDevicesResponse* resp) {
  for (const DeviceInfo& info : registry_->List()) FillDevice(info, resp->add_devices());
  return grpc::Status::OK;
}

grpc::Status MigmoverService::SetDeviceState(grpc::ServerContext*,
                                             const v1::SetDeviceStateRequest* req,
                                             v1::SetDeviceStateResponse* resp) {
  MM_CHECK_BOUNDS(req);
  absl::Status status = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(MigState target, ParseMigState(req->state()));
    ASSIGN_OR_RETURN(DeviceEntry * e, registry_->GetUnclaimed(req->name()));
    if (!e->runs_fsm()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "device '", e->name, "' is a ", DeviceKindName(e->kind), "; the agent runs its FSM"));
    }
    absl::MutexLock l(&e->mu);
    const MigState from = e->device->last_known_state();
    ASSIGN_OR_RETURN(FsmPath path, FindFsmPath(e->device->features(), from, target));
    resp->set_path(path.ToString());
    absl::StatusOr<UniqueFd> fd = e->device->SetState(target);
    const MigState now = e->device->last_known_state();
    // A walk that left the data session (or a failure that reset the device) made the held
    // data fd dead: drop it.
    bool ended = now == MigState::kError;
    for (size_t i = 1; i < path.size(); ++i) {
      ended = ended || ArcEndsDataSession(path[i - 1], path[i]);
    }
    if (ended) e->data_fd.Reset();
    if (!fd.ok()) return fd.status();
    if (fd->valid()) {
      e->data_fd = std::move(*fd);
      resp->set_data_fd_opened(true);
    }
    MM_LOG(INFO) << "device " << e->name << ": " << path.ToString()
                 << (resp->data_fd_opened() ? " (data fd opened)" : "");
    return absl::OkStatus();
  }();
  if (!status.ok()) return ToGrpcStatus(status);
  auto info = registry_->Info(req->name());
  if (info.ok()) FillDevice(*info, resp->mutable_device());
  return grpc::Status::OK;
}

grpc::Status MigmoverService::PrepareDestination(grpc::ServerContext*,
                                                 const v1::PrepareDestinationRequest* req,
                                                 v1::SessionStatus* resp) {
  MM_CHECK_BOUNDS(req);
  absl::Status status = [&]() -> absl::Status {
    DestinationConfig config;
    config.session_id = req->session_id();
    config.devices.assign(req->devices().begin(), req->devices().end());
    if (!req->final_state().empty()) {
      ASSIGN_OR_RETURN(config.final_state, ParseMigState(req->final_state()));
    }
    const bool generated = req->token().empty();
    if (generated) {
      ASSIGN_OR_RETURN(config.token, NewSessionSecret());
    } else {
      ASSIGN_OR_RETURN(config.token, ParseSessionSecret(req->token(), "token"));
    }
    ASSIGN_OR_RETURN(config.stream, StreamOptionsFrom(req->options()));
    // Receives keep a thread per device unless asked: sharing measured no better there.
    config.workers = req->options().workers();
    if (config.workers > 64) return absl::InvalidArgumentError("workers must be 0..64");
    // Whatever transport the source chooses is accepted; naming one here only checks that this
    // daemon offers it.
    RETURN_IF_ERROR(defaults_.transports->Find(req->options().transport()).status());
    config.transports = defaults_.transports;
    config.tls = defaults_.tls;
    ASSIGN_OR_RETURN(const std::string fingerprint, Fingerprint(*req));
    // Receives hold a stream's buffers per connection; the source decides how many, up to
    // this daemon's default as a rule.
    const uint64_t memory = config.devices.size() * uint64_t{defaults_.streams} *
                            stream::StreamMemoryBytes(config.stream);
    ASSIGN_OR_RETURN(std::shared_ptr<Session> existing,
                     sessions_->Reserve(config.session_id, fingerprint, memory));
    if (existing) {
      // A retry of the request that created it (its reply was lost): the same answer, the
      // generated secret included, for the agent cannot use the session without it.
      auto dst = std::dynamic_pointer_cast<DestinationSession>(existing);
      if (dst == nullptr) return absl::InternalError("same request, different role");
      FillStatus(dst->Snapshot(), resp);
      if (generated) resp->set_token(dst->token().data(), dst->token().size());
      MM_LOG(INFO) << "session " << config.session_id << ": PrepareDestination retried, "
                   << "answered with the session it created";
      return absl::OkStatus();
    }
    auto session = DestinationSession::Prepare(config, registry_);
    if (!session.ok()) {
      sessions_->Unreserve(config.session_id);
      return session.status();
    }
    sessions_->Put(*session);
    FillStatus((*session)->Snapshot(), resp);
    if (generated) resp->set_token(config.token.data(), config.token.size());
    return absl::OkStatus();
  }();
  if (!status.ok()) MM_LOG(WARNING) << "PrepareDestination " << req->session_id() << ": " << status;
  return ToGrpcStatus(status);
}

grpc::Status MigmoverService::StartSource(grpc::ServerContext*, const v1::StartSourceRequest* req,
                                          v1::SessionStatus* resp) {
  MM_CHECK_BOUNDS(req);
  absl::Status status = [&]() -> absl::Status {
    SourceConfig config;
    config.session_id = req->session_id();
    config.devices.assign(req->devices().begin(), req->devices().end());
    ASSIGN_OR_RETURN(config.peer, net::ParseHostPort(req->peer()));
    config.tls = defaults_.tls;
    if (req->token().empty()) {
      return absl::InvalidArgumentError(
          "token is empty: a source presents its session's secret, the token given to "
          "PrepareDestination or returned in its reply");
    }
    ASSIGN_OR_RETURN(config.token, ParseSessionSecret(req->token(), "token"));
    config.precopy = req->has_precopy() ? req->precopy() : true;
    if (req->has_downtime_limit_ms()) {
      config.downtime_limit = absl::Milliseconds(req->downtime_limit_ms());
    }
    if (req->has_progress_timeout_seconds()) {
      config.progress_timeout = absl::Seconds(req->progress_timeout_seconds());
    }
    if (req->has_completion_timeout_seconds()) {
      config.completion_timeout = absl::Seconds(req->completion_timeout_seconds());
    }
    if (req->has_completion_timeout_per_gib_seconds()) {
      config.completion_timeout_per_gib = absl::Seconds(req->completion_timeout_per_gib_seconds());
    }
    config.bandwidth = req->bandwidth_bytes_per_second();
    ASSIGN_OR_RETURN(config.transport, defaults_.transports->Find(req->options().transport()));
    const uint32_t max_streams = config.transport->max_streams_per_device();
    if (req->options().streams() > max_streams) {
      return absl::InvalidArgumentError(absl::StrCat(
          "transport ", config.transport->name(), " stripes a device's stream over at most ",
          max_streams, " connection(s): streams must be 0..", max_streams));
    }
    config.streams = req->options().streams() ? req->options().streams()
                                              : std::min(defaults_.streams, max_streams);
    config.workers = req->options().workers() ? req->options().workers() : defaults_.workers;
    if (config.workers > 64) return absl::InvalidArgumentError("workers must be 0..64");
    ASSIGN_OR_RETURN(config.stream, StreamOptionsFrom(req->options()));
    if (config.transport->name() != "tcp") {
      // A DPDK link's stream does not resume (its link has its own retransmission).
      config.stream.reconnect_window = absl::ZeroDuration();
      config.stream.replay_bytes = 0;
    }
    config.host_bandwidth = defaults_.host_bandwidth;
    ASSIGN_OR_RETURN(const std::string fingerprint, Fingerprint(*req));
    const uint64_t memory =
        config.devices.size() * (uint64_t{config.streams} * stream::StreamMemoryBytes(config.stream) +
                                 stream::ReplayMemoryBytes(config.stream));
    ASSIGN_OR_RETURN(std::shared_ptr<Session> existing,
                     sessions_->Reserve(config.session_id, fingerprint, memory));
    if (existing) {
      FillStatus(existing->Snapshot(), resp);
      MM_LOG(INFO) << "session " << config.session_id << ": StartSource retried, answered "
                   << "with the session it started";
      return absl::OkStatus();
    }
    auto session = SourceSession::Start(config, registry_);
    if (!session.ok()) {
      sessions_->Unreserve(config.session_id);
      return session.status();
    }
    sessions_->Put(*session);
    MM_LOG(INFO) << "session " << config.session_id << ": source started, " << config.devices.size()
                 << " device(s) to " << req->peer() << ", precopy "
                 << (config.precopy ? "on" : "off") << ", "
                 << "transport " << config.transport->name() << ", " << config.streams
                 << " stream(s) per device, data path "
                 << stream::DataPathName(config.stream.data_path);
    FillStatus((*session)->Snapshot(), resp);
    return absl::OkStatus();
  }();
  if (!status.ok()) MM_LOG(WARNING) << "StartSource " << req->session_id() << ": " << status;
  return ToGrpcStatus(status);
}

grpc::Status MigmoverService::Switchover(grpc::ServerContext*, const v1::SwitchoverRequest* req,
                                         v1::SessionStatus* resp) {
  MM_CHECK_BOUNDS(req);
  auto session = sessions_->FindSource(req->session_id());
  if (!session.ok()) return ToGrpcStatus(session.status());
  if (absl::Status s = (*session)->Switchover(); !s.ok()) return ToGrpcStatus(s);
  FillStatus((*session)->Snapshot(), resp);
  return grpc::Status::OK;
}

grpc::Status MigmoverService::SetBandwidth(grpc::ServerContext*, const v1::SetBandwidthRequest* req,
                                           v1::SessionStatus* resp) {
  MM_CHECK_BOUNDS(req);
  auto session = sessions_->FindSource(req->session_id());
  if (!session.ok()) return ToGrpcStatus(session.status());
  (*session)->SetBandwidth(req->bytes_per_second());
  FillStatus((*session)->Snapshot(), resp);
  return grpc::Status::OK;
}

grpc::Status MigmoverService::WatchSession(grpc::ServerContext* ctx,
                                           const v1::WatchSessionRequest* req,
                                           grpc::ServerWriter<v1::SessionStatus>* writer) {
  MM_CHECK_BOUNDS(req);
  auto session = sessions_->Find(req->session_id());
  if (!session.ok()) return ToGrpcStatus(session.status());
  SessionSnapshot snap = (*session)->Snapshot();
  uint64_t sent_version = 0, sent_bytes = UINT64_MAX;
  while (true) {
    if (snap.version != sent_version || snap.bytes_moved != sent_bytes) {
      v1::SessionStatus out;
      FillStatus(snap, &out);
      if (!writer->Write(out)) return grpc::Status::OK;  // The client went away.
      sent_version = snap.version;
      sent_bytes = snap.bytes_moved;
    }
    if (IsFinal(snap.phase)) return grpc::Status::OK;
    if (ctx->IsCancelled()) return grpc::Status::CANCELLED;
    snap = (*session)->WaitForChange(sent_version, absl::Milliseconds(100));
  }
}

grpc::Status MigmoverService::GetSession(grpc::ServerContext*, const v1::GetSessionRequest* req,
                                         v1::SessionStatus* resp) {
  MM_CHECK_BOUNDS(req);
  auto session = sessions_->Find(req->session_id());
  if (!session.ok()) return ToGrpcStatus(session.status());
  FillStatus((*session)->Snapshot(), resp);
  return grpc::Status::OK;
}

grpc::Status MigmoverService::ResolveSession(grpc::ServerContext*,
                                             const v1::ResolveSessionRequest* req,
                                             v1::SessionStatus* resp) {
  MM_CHECK_BOUNDS(req);
  if (req->outcome() != v1::ResolveSessionRequest::RUN &&
      req->outcome() != v1::ResolveSessionRequest::ABANDON) {
    return ToGrpcStatus(absl::InvalidArgumentError("outcome must be RUN or ABANDON"));
  }
  auto session = sessions_->Find(req->session_id());
  if (!session.ok()) return ToGrpcStatus(session.status());
  if ((*session)->role() != SessionRole::kDestination) {
    return ToGrpcStatus(absl::FailedPreconditionError(absl::StrCat(
        "session '", req->session_id(), "' is a source: a source is never in doubt (it decides "
        "the outcome)")));
  }
  auto dst = sessions_->FindDestination(req->session_id());
  if (!dst.ok()) return ToGrpcStatus(dst.status());
  const bool was_in_doubt = (*dst)->phase() == SessionPhase::kInDoubt;
  if (absl::Status s = (*dst)->Resolve(req->outcome() == v1::ResolveSessionRequest::RUN);
      !s.ok() && (!was_in_doubt || (*dst)->phase() == SessionPhase::kInDoubt)) {
    // Refused (not IN_DOUBT). A device's error after RUN ended the session FAILED: that one is
    // answered with the status, which carries it.
    return ToGrpcStatus(s);
  }
  FillStatus((*dst)->Snapshot(), resp);
  return grpc::Status::OK;
}

grpc::Status MigmoverService::CancelSession(grpc::ServerContext*,
                                            const v1::CancelSessionRequest* req,
                                            v1::SessionStatus* resp) {
  MM_CHECK_BOUNDS(req);
  auto session = sessions_->Find(req->session_id());
  if (!session.ok()) return ToGrpcStatus(session.status());
  if ((*session)->phase() == SessionPhase::kInDoubt) {
    return ToGrpcStatus(absl::FailedPreconditionError(absl::StrCat(
        "session '", req->session_id(), "' is IN_DOUBT: its devices committed and wait for the "
        "source's outcome; settle it with ResolveSession (RUN if the source SUCCEEDED, ABANDON "
        "otherwise)")));
  }
  if (absl::Status s = (*session)->Cancel(); !s.ok()) return ToGrpcStatus(s);
  // Cancel returns at once; the workers put the devices back. Wait briefly so the answer
  // usually shows the final phase.
  SessionSnapshot snap = (*session)->Snapshot();
  for (int i = 0; i < 50 && !IsFinal(snap.phase); ++i) {
    snap = (*session)->WaitForChange(snap.version, absl::Milliseconds(100));
  }
  FillStatus(snap, resp);
  return grpc::Status::OK;
}

grpc::Status MigmoverService::ListSessions(grpc::ServerContext*, const v1::ListSessionsRequest*,
                                           v1::ListSessionsResponse* resp) {
  for (const auto& session : sessions_->List()) FillStatus(session->Snapshot(), resp->add_sessions());
  return grpc::Status::OK;
}

grpc::Status MigmoverService::ForgetSession(grpc::ServerContext*,
                                            const v1::ForgetSessionRequest* req,
                                            v1::SessionStatus* resp) {
  MM_CHECK_BOUNDS(req);
  auto forgotten = sessions_->Forget(req->session_id());
  if (!forgotten.ok()) return ToGrpcStatus(forgotten.status());
  FillStatus((*forgotten)->Snapshot(), resp);
  MM_LOG(INFO) << "session " << req->session_id() << ": forgotten on request";
  return grpc::Status::OK;
}

grpc::Status MigmoverService::GetDaemonInfo(grpc::ServerContext*, const v1::GetDaemonInfoRequest*,
                                            v1::DaemonInfo* resp) {
  resp->set_version(kMigmoverVersion);
  resp->set_peer_protocol_version(wire::kProtocolVersion);
  for (const char* f : {"pre_copy", "p2p", "data_fd", "striping", "splice", "copy",
                        "resolve_in_doubt", "idempotent_sessions", "bandwidth_cap",
                        "host_bandwidth_cap", "memory_admission"}) {
    resp->add_features(f);
  }
  if (defaults_.tls) resp->add_features("peer_tls");
  if (defaults_.grpc_tls) resp->add_features("grpc_tls");
  if (intake_ != nullptr) resp->add_features("fd_intake");
  for (const transport::Transport* t : defaults_.transports->all()) {
    resp->add_transports(std::string(t->name()));
  }
  resp->set_io_engine(defaults_.io_engine);
  resp->set_peer_security(defaults_.tls ? "TLS 1.3 with " + defaults_.tls->Describe()
                                        : "plaintext");
  resp->set_peer_address(defaults_.peer_address);
  resp->set_metrics_address(defaults_.metrics_address);
  v1::DaemonInfo::Limits* l = resp->mutable_limits();
  const SessionLimits& limits = sessions_->limits();
  l->set_max_sessions(limits.max_sessions);
  l->set_max_devices_per_session(wire::kMaxDevicesPerSession);
  l->set_max_streams_per_device(wire::kMaxStreamsPerDevice);
  l->set_max_chunk_size(wire::kMaxDataLength);
  l->set_max_ended_sessions(limits.max_ended);
  l->set_session_retention_seconds(
      static_cast<uint32_t>(absl::ToInt64Seconds(limits.retention)));
  l->set_max_session_id_length(wire::kMaxSessionIdLength);
  l->set_max_device_name_length(64);
  (void)sessions_->ActiveCount();  // Sessions that ended give their memory back first.
  if (defaults_.memory != nullptr) {
    l->set_max_memory_bytes(defaults_.memory->limit());
    l->set_memory_in_use_bytes(defaults_.memory->in_use());
  }
  if (defaults_.host_bandwidth != nullptr) {
    l->set_max_bandwidth_bytes_per_second(defaults_.host_bandwidth->rate());
  }
  return grpc::Status::OK;
}

}  // namespace migmover
