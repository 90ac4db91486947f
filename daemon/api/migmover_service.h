// MigmoverService: the gRPC API (api/migmover.proto) over the daemon's registry, fd intake and
// sessions. This is the one place where absl::Status becomes a gRPC status.
#ifndef MIGMOVER_DAEMON_API_MIGMOVER_SERVICE_H_
#define MIGMOVER_DAEMON_API_MIGMOVER_SERVICE_H_

#include "api/migmover.grpc.pb.h"
#include "daemon/intake/fd_intake.h"
#include "daemon/registry/device_registry.h"
#include "daemon/session/session_manager.h"
#include "transport/api/transport_set.h"
#include "transport/stream/stream_options.h"
#include "transport/tls/tls_context.h"

namespace migmover {

// Daemon-wide defaults for what a request's TransferOptions leave unset.
struct ServiceDefaults {
  stream::StreamOptions stream;
  uint32_t streams = 1;  // Connections per device stream when a request leaves it 0.
  // --replay_buffer: a source device stream's replay buffer whenever its reconnect window is
  // not 0 (stream.replay_bytes follows the window, session by session).
  uint64_t replay_bytes = 16u << 20;
  uint32_t workers = 1;  // Shared pump threads per source session when a request leaves it 0.
  // The transports this daemon offers (TCP always; DPDK with --dpdk_port). Not owned.
  const transport::TransportSet* transports = nullptr;
  // The TLS a source session's connections run; null: plaintext (--plaintext_peers).
  std::shared_ptr<const tls::TlsContext> tls;
  // What GetDaemonInfo reports that only main() knows.
  std::string io_engine;     // "io_uring", or "syscalls (io_uring refused: ...)".
  std::string peer_address;  // --peer_listen as bound.
  bool grpc_tls = false;     // --grpc_listen serves agents over mutual TLS.
  std::string metrics_address;  // --metrics_listen as bound, or empty.
  // --max_memory, charged by simulated devices and by sessions' stream buffers (null: none).
  std::shared_ptr<MemoryBudget> memory;
  // --max_bandwidth, which every source session joins (null: none).
  std::shared_ptr<stream::HostBandwidth> host_bandwidth;
};

// The one mapping from absl::Status to grpc::Status (the canonical codes are the same).
grpc::Status ToGrpcStatus(const absl::Status& status);

class MigmoverService final : public migmover::v1::Migmover::Service {
 public:
  MigmoverService(DeviceRegistry* registry, FdIntake* intake, SessionManager* sessions,
                  ServiceDefaults defaults)
      : registry_(registry), intake_(intake), sessions_(sessions), defaults_(defaults) {}

  grpc::Status AttachDevice(grpc::ServerContext*, const v1::AttachDeviceRequest* req,
                            v1::Device* resp) override;
  grpc::Status DetachDevice(grpc::ServerContext*, const v1::DetachDeviceRequest* req,
                            v1::Device* resp) override;
  grpc::Status ListDevices(grpc::ServerContext*, const v1::ListDevicesRequest* req,
                           v1::ListDevicesResponse* resp) override;
  grpc::Status SetDeviceState(grpc::ServerContext*, const v1::SetDeviceStateRequest* req,
                              v1::SetDeviceStateResponse* resp) override;
  grpc::Status PrepareDestination(grpc::ServerContext*, const v1::PrepareDestinationRequest* req,
                                  v1::SessionStatus* resp) override;
  grpc::Status StartSource(grpc::ServerContext*, const v1::StartSourceRequest* req,
                           v1::SessionStatus* resp) override;
  grpc::Status Switchover(grpc::ServerContext*, const v1::SwitchoverRequest* req,
                          v1::SessionStatus* resp) override;
  grpc::Status SetBandwidth(grpc::ServerContext*, const v1::SetBandwidthRequest* req,
                            v1::SessionStatus* resp) override;
  grpc::Status WatchSession(grpc::ServerContext* ctx, const v1::WatchSessionRequest* req,
                            grpc::ServerWriter<v1::SessionStatus>* writer) override;
  grpc::Status GetSession(grpc::ServerContext*, const v1::GetSessionRequest* req,
                          v1::SessionStatus* resp) override;
  grpc::Status ResolveSession(grpc::ServerContext*, const v1::ResolveSessionRequest* req,
                              v1::SessionStatus* resp) override;
  grpc::Status CancelSession(grpc::ServerContext*, const v1::CancelSessionRequest* req,
                             v1::SessionStatus* resp) override;
  grpc::Status ListSessions(grpc::ServerContext*, const v1::ListSessionsRequest* req,
                            v1::ListSessionsResponse* resp) override;
  grpc::Status ForgetSession(grpc::ServerContext*, const v1::ForgetSessionRequest* req,
                             v1::SessionStatus* resp) override;
  grpc::Status GetDaemonInfo(grpc::ServerContext*, const v1::GetDaemonInfoRequest* req,
                             v1::DaemonInfo* resp) override;

 private:
  absl::StatusOr<std::unique_ptr<DeviceEntry>> MakeEntry(const v1::AttachDeviceRequest& req);
  absl::StatusOr<stream::StreamOptions> StreamOptionsFrom(const v1::TransferOptions& o);

  DeviceRegistry* registry_;
  FdIntake* intake_;
  SessionManager* sessions_;
  const ServiceDefaults defaults_;
};

}  // namespace migmover

#endif  // MIGMOVER_DAEMON_API_MIGMOVER_SERVICE_H_
