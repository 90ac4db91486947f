// SourceSession: the saving side of a migration. One control thread per device, each with its
// own stream to the destination daemon, opened through the session's transport (which may move
// the data on threads of its own): PRE_COPY rounds while the VM runs (when the device has
// PRE_COPY), then on Switchover STOP_COPY to the end of the stream, END_STREAM, and the
// destination's COMMIT. The session decides once (../shared/docs/commit-protocol.md): when every
// device's COMMIT(0) is in, it passes its point of no return, stops every device and sends
// CONFIRM on every stream, after which the destination may run them; a failure or a cancel
// before that point abandons the migration: every device back in RUNNING, the destination told
// (ERROR), and since it never hears CONFIRM it never runs them. The source is never in doubt:
// the decision is its own.
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
#include "daemon/session/peer_watch.h"
#include "daemon/session/session.h"
#include "daemon/session/session_secret.h"
#include "transport/tls/tls_context.h"
#include "daemon/session/worker_threads.h"
#include "transport/api/transport.h"
#include "transport/net/socket.h"
#include "transport/stream/host_bandwidth.h"
#include "transport/stream/stream_options.h"

namespace migmover {

struct SourceConfig {
  std::string session_id;
  std::vector<std::string> devices;
  net::HostPort peer;
  // The TLS every connection to the peer runs; null: plaintext (the operator's choice).
  std::shared_ptr<const tls::TlsContext> tls;
  SessionSecret token{};  // The destination's (session_secret.h).
  bool precopy = true;
  stream::StreamOptions stream;
  // What carries the device streams (not owned; outlives the session).
  transport::Transport* transport = nullptr;
  uint64_t bandwidth = 0;  // Bytes per second, 0 = unlimited.
  // The daemon's host-wide cap (--max_bandwidth), shared with every other source session
  // (null or rate 0: none). The session's own cap applies within its share.
  std::shared_ptr<stream::HostBandwidth> host_bandwidth;
  uint32_t streams = 1;    // Connections each device's stream is striped over (if the
                           // transport stripes).
  // Threads that move the session's copy-path data; 0 = each device's own thread does.
  uint32_t workers = 0;
  // How long a device's stream may take to connect and be answered.
  absl::Duration connect_timeout = absl::Seconds(10);
  // How often an idle PRE_COPY device is asked for new precopy data.
  absl::Duration precopy_poll = absl::Milliseconds(5);
  // Switchover readiness: the expected downtime must be within this (QEMU's downtime-limit
  // default).
  absl::Duration downtime_limit = absl::Milliseconds(300);
  // Policy timeouts (each 0 = off), all ending the session DEADLINE_EXCEEDED with their name,
  // before its point of no return (commit-protocol.md): a PRE_COPY whose remaining bytes reach
  // no new low (and that is not switchover-ready) for `progress_timeout`; a session not
  // complete after `completion_timeout`, or after `completion_timeout_per_gib` for each GiB of
  // its devices' state (at least one GiB counted). KubeVirt's defaults.
  absl::Duration progress_timeout = absl::Seconds(150);
  absl::Duration completion_timeout = absl::ZeroDuration();
  absl::Duration completion_timeout_per_gib = absl::Seconds(800);
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
  absl::Status Cancel() override;
  void Join() override;

 private:
  SourceSession(SourceConfig config, DeviceRegistry* registry, std::vector<DeviceEntry*> entries);
  void Run(size_t i);
  absl::Status RunDevice(size_t i);
  // The watch thread: opens the heartbeat through `channel` and watches the destination daemon
  // until the session ends.
  void WatchPeer(std::shared_ptr<transport::SourceChannel> channel);
  // The destination daemon stopped answering: abandons the migration unless it was already
  // decided (PeerWatch's on_lost).
  void PeerLost(absl::Status why);
  // Abandons the migration for `why` unless it was already decided; every device's failure is
  // then `why` (`peer_lost`: the destination is gone, so its ERROR gets no time). False when it
  // was decided (to commit, or already to abort).
  bool AbandonFor(const absl::Status& why, bool peer_lost = false);
  // The watch thread's clock, every heartbeat interval: switchover readiness and the policy
  // timeouts.
  void Tick();
  // PRE_COPY pumps at most this much between two reads of the driver's estimates.
  static constexpr uint64_t kPrecopySlice = 64ull << 20;
  // The destination loaded device `device`'s initial precopy data (its LOADED).
  void OnLoaded(uint32_t device);
  // Reads the driver's stop-copy estimate into the device's progress (unknown if refused).
  void ReadStopCopySize(size_t i, MigratableDevice* dev);
  absl::Status RunPrecopy(size_t i, MigratableDevice* dev, int data_fd,
                          transport::DeviceStreamSender* sender);
  // Data-fd mode: streams the agent's save-data fd, in PRE_COPY until the agent's Switchover
  // (when the session asked for precopy), then to the fd's end, keepalives flowing whenever the
  // VMM pauses. Errors: Aborted when the fd ends before Switchover; the pump's.
  absl::Status RunAgentStream(size_t i, int data_fd, transport::DeviceStreamSender* sender);
  // How often a device thread with nothing to send tells the destination it is there, and
  // hears whether the destination gave up (its ERROR waits in the socket until then): the
  // heartbeat's interval, at most a quarter of the idle timeout.
  absl::Duration KeepaliveEvery() const;
  // After a failure, once no device thread runs: every FSM device back to RUNNING (SET, else
  // RESET), all quiesced ones to RUNNING_P2P first (rule 5), committed ones too.
  void RecoverAll();
  // At switchover, before any device leaves for STOP_COPY: moves device `i` to its P2P state
  // (RUNNING_P2P or PRE_COPY_P2P) when it has one, then waits until every FSM device of the
  // session did (rule 5: quiesce all before any stops). Errors: the SET's; Cancelled.
  absl::Status QuiesceForSwitchover(size_t i);
  // After device `i` committed: waits (sending KEEPALIVEs) until the session decided. True: every
  // device committed, the point of no return is passed. Errors: Aborted when the migration was
  // abandoned (another device failed, or a cancel); the KEEPALIVE's error.
  absl::StatusOr<bool> AwaitDecision(size_t i, transport::DeviceStreamSender* sender);
  // Abandons the migration unless it was already decided to commit; true if abandoned now or
  // before.
  bool Abandon();
  // The fd the agent gave for a data-fd device (read under the entry's mutex).
  int AgentDataFd(size_t i);
  // Whether device `e` migrates with PRE_COPY in this session (the daemon runs its FSM, the
  // agent asked for precopy and the driver offers it). Features never change after attach.
  bool PrecopyFor(DeviceEntry* e) const;
  // Closes it (under the entry's mutex): its writer sees the end at once.
  void CloseAgentDataFd(size_t i);

  const SourceConfig config_;
  DeviceRegistry* registry_;
  std::vector<DeviceEntry*> entries_;
  std::vector<UniqueFd> data_fds_;
  std::atomic<bool> switchover_{false};
  std::atomic<bool> cancel_{false};          // Stops every device: cancel or a failure.
  std::atomic<bool> agent_cancelled_{false};  // Cancel() was called.
  std::atomic<int> running_workers_{0};
  absl::Mutex wake_mu_;  // Wakes idle PRE_COPY loops at switchover or cancel.
  size_t quiesced_ ABSL_GUARDED_BY(wake_mu_) = 0;  // FSM devices in their P2P state.
  // The session's one decision: open until every device committed (commit) or the migration is
  // abandoned (abort); never changes once made.
  enum class Decision { kOpen, kCommit, kAbort };
  absl::Mutex decide_mu_;
  Decision decision_ ABSL_GUARDED_BY(decide_mu_) = Decision::kOpen;
  size_t committed_ ABSL_GUARDED_BY(decide_mu_) = 0;
  // Why the migration was abandoned when the heartbeat was lost or a timeout fired first (then
  // every device's failure is that), and whether it was the peer that was lost.
  absl::Status abandoned_for_ ABSL_GUARDED_BY(decide_mu_);
  bool peer_lost_ ABSL_GUARDED_BY(decide_mu_) = false;
  // Decided (to commit or to abort): nothing is left for a timeout to end.
  bool Decided();
  // The watch thread's own (Tick).
  bool ready_reported_ = false;
  uint64_t best_remaining_ = UINT64_MAX;  // Lowest remaining bytes seen in PRE_COPY.
  uint64_t last_bytes_ = 0;                // Bytes moved at the last tick.
  absl::Time last_progress_ = absl::Now();
  uint64_t state_bytes_ = 0;  // Largest size of the devices' state seen.
  PeerWatch watch_;
  WorkerThreads workers_;  // The device threads and the watch thread.
  // Opened by the device threads (and the watch thread, for the heartbeat); released by the
  // last device thread (or the destructor).
  std::shared_ptr<transport::SourceChannel> channel_;
};

}  // namespace migmover

#endif  // MIGMOVER_DAEMON_SESSION_SOURCE_SESSION_H_
