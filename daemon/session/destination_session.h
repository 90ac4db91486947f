// DestinationSession: the resuming side. Prepare moves every FSM device to RESUMING (so the
// data fd exists before the source connects); each connection the peer acceptor hands over
// becomes a worker with its own io_uring that writes the stream into the device, checks the
// END_STREAM totals and digest, commits (RESUMING -> STOP, then the agent's final state) and
// answers COMMIT. A device whose stream or commit fails is reset, never left half-resumed.
#ifndef MIGMOVER_DAEMON_SESSION_DESTINATION_SESSION_H_
#define MIGMOVER_DAEMON_SESSION_DESTINATION_SESSION_H_

#include <array>
#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "daemon/registry/device_registry.h"
#include "daemon/session/session.h"
#include "transport/dpdk/dpdk_transport.h"
#include "transport/peer/frame_codec.h"
#include "transport/stream/pump_worker.h"
#include "transport/stream/stream_options.h"

namespace migmover {

struct DestinationConfig {
  std::string session_id;
  std::vector<std::string> devices;
  MigState final_state = MigState::kRunning;
  std::array<uint8_t, 32> token{};
  stream::StreamOptions stream;
  // The daemon's DPDK port (null: none). A source whose HELLO names a DPDK link has its stream
  // received there; without a port such a source is refused.
  dpdk::DpdkTransport* dpdk = nullptr;
  // Threads (each with one io_uring and buffer pool) that receive the session's copy-path data;
  // 0 = each device's own thread does.
  uint32_t workers = 0;
};

class DestinationSession final : public Session {
 public:
  // Claims the devices and moves FSM devices to RESUMING. Errors: those of Claim; InvalidArgument
  // for a final state other than RUNNING, RUNNING_P2P or STOP (or one the device lacks);
  // FailedPrecondition for a save-data fd; the SET's error if a device cannot enter RESUMING
  // (devices already moved are reset and released).
  static absl::StatusOr<std::shared_ptr<DestinationSession>> Prepare(DestinationConfig config,
                                                                     DeviceRegistry* registry);
  ~DestinationSession() override;

  // A source connection for one stream of one device, after its HELLO was read. Checks the
  // token, device index and count, stream index and count, answers HELLO_ACK, and starts the
  // device's worker once all of its streams are connected. Errors (also sent to
  // the peer as the HELLO_ACK refusal): PermissionDenied (token), InvalidArgument (device
  // count or index), AlreadyExists (device already connected), FailedPrecondition (session
  // over).
  absl::Status AcceptStream(const peer::Hello& hello, UniqueFd socket);

  void Cancel() override;
  void Join() override;

 private:
  DestinationSession(DestinationConfig config, DeviceRegistry* registry,
                     std::vector<DeviceEntry*> entries);
  // `link`: the stream's receiving end on a DPDK link, or null to receive on `sockets`.
  void Run(size_t i, std::vector<UniqueFd> sockets,
           std::unique_ptr<stream::DeviceStreamReceiver> link);
  // Abandons a device's resume: RESET for FSM devices, close for data fds.
  void Abandon(size_t i);
  void WorkerDone();
  void AbandonUnconnected();

  const DestinationConfig config_;
  DeviceRegistry* registry_;
  std::vector<DeviceEntry*> entries_;
  std::vector<UniqueFd> data_fds_;  // FSM devices: the resuming fd from STOP -> RESUMING.
  std::vector<std::atomic<bool>> connected_;
  std::atomic<bool> cancel_{false};
  std::atomic<int> remaining_{0};  // Devices not yet finished (committed or abandoned).
  absl::Mutex threads_mu_;
  std::vector<std::thread> workers_ ABSL_GUARDED_BY(threads_mu_);
  // Per device: the streams connected so far, by stream index, until all have come.
  std::vector<std::vector<UniqueFd>> pending_ ABSL_GUARDED_BY(threads_mu_);
  std::vector<std::unique_ptr<stream::PumpWorker>> pump_workers_;
};

}  // namespace migmover

#endif  // MIGMOVER_DAEMON_SESSION_DESTINATION_SESSION_H_
