// SourceSession: the saving side of a migration. One control thread per device, each with its
// own stream to the destination daemon, opened through the session's transport (which may move
// the data on threads of its own): PRE_COPY rounds while the VM runs (when the device has
// PRE_COPY), then on Switchover STOP_COPY to the end of the stream, END_STREAM, and the
// destination's COMMIT. After success every device is in STOP; after any failure every device is
// back in RUNNING and the destination has been told.
//
// Threads: Start, Switchover, SetBandwidth, Cancel and Join from any thread (gRPC handlers);
// the device threads are the session's own. Nothing here holds a lock while it waits on the
// peer: the session's locks guard device calls (DeviceEntry::mu) and wake-ups (wake_mu_).
#ifndef MIGMOVER_DAEMON_SESSION_SOURCE_SESSION_H_
#define MIGMOVER_DAEMON_SESSION_SOURCE_SESSION_H_

#include <array>
#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "daemon/registry/device_registry.h"
#include "daemon/session/session.h"
#include "daemon/session/worker_threads.h"
#include "transport/api/transport.h"
#include "transport/net/socket.h"
#include "transport/stream/stream_options.h"

namespace migmover {

struct SourceConfig {
  std::string session_id;
  std::vector<std::string> devices;
  net::HostPort peer;
  std::array<uint8_t, 32> token{};
  bool precopy = true;
  stream::StreamOptions stream;
  // What carries the device streams (not owned; outlives the session).
  transport::Transport* transport = nullptr;
  uint64_t bandwidth = 0;  // Bytes per second, 0 = unlimited.
  uint32_t streams = 1;    // Connections each device's stream is striped over (if the
                           // transport stripes).
  // Threads that move the session's copy-path data; 0 = each device's own thread does.
  uint32_t workers = 0;
  // How long a device's stream may take to connect and be answered.
  absl::Duration connect_timeout = absl::Seconds(10);
  // How often an idle PRE_COPY device is asked for new precopy data.
  absl::Duration precopy_poll = absl::Milliseconds(5);
};

class SourceSession final : public Session {
 public:
  // Claims the devices, starts the transport's channel and the device threads. Errors: those of
  // DeviceRegistry::Claim and Transport::StartSource; FailedPrecondition for an FSM device that
  // is not RUNNING or RUNNING_P2P, or a data fd that is not a save-data fd.
  static absl::StatusOr<std::shared_ptr<SourceSession>> Start(SourceConfig config,
                                                              DeviceRegistry* registry);
  ~SourceSession() override;

  // The agent has stopped the vCPUs: move to STOP_COPY and drain. FailedPrecondition after the
  // session ended; a repeated call is a no-op.
  absl::Status Switchover();
  // Changes the bandwidth cap of every stream of this session (0 = unlimited).
  void SetBandwidth(uint64_t bytes_per_second);
  uint64_t bandwidth() const { return config_.stream.limiter->rate(); }
  void Cancel() override;
  void Join() override;

 private:
  SourceSession(SourceConfig config, DeviceRegistry* registry, std::vector<DeviceEntry*> entries);
  void Run(size_t i);
  absl::Status RunDevice(size_t i);
  absl::Status RunPrecopy(size_t i, MigratableDevice* dev, int data_fd,
                          transport::DeviceStreamSender* sender);
  // Brings a device back to RUNNING after a failure (SET, else RESET).
  void Recover(size_t i);
  // The fd the agent gave for a data-fd device (read under the entry's mutex).
  int AgentDataFd(size_t i);

  const SourceConfig config_;
  DeviceRegistry* registry_;
  std::vector<DeviceEntry*> entries_;
  std::vector<UniqueFd> data_fds_;
  std::atomic<bool> switchover_{false};
  std::atomic<bool> cancel_{false};          // Stops every device: cancel or a failure.
  std::atomic<bool> agent_cancelled_{false};  // Cancel() was called.
  std::atomic<int> running_workers_{0};
  absl::Mutex wake_mu_;  // Wakes idle PRE_COPY loops at switchover or cancel.
  WorkerThreads workers_;
  // Opened by the device threads; released by the last one (or the destructor).
  std::unique_ptr<transport::SourceChannel> channel_;
};

}  // namespace migmover

#endif  // MIGMOVER_DAEMON_SESSION_SOURCE_SESSION_H_
