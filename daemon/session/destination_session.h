// DestinationSession: the resuming side. Prepare moves every FSM device to RESUMING (so the
// data fd exists before the source connects); each stream the peer acceptor hands over (through
// the transport the source chose) gets a device thread that writes the stream into the device,
// checks the END_STREAM totals and digest, commits (RESUMING -> STOP: the device is loaded and
// held stopped), answers COMMIT and waits for the source's CONFIRM. Only once the source
// confirmed (every device of the session committed; it will never resume) do the devices move to
// the agent's final state, all together (RUNNING_P2P first). A device whose stream or commit
// fails, or whose source abandons the migration, is reset with every other device of the
// session, never left half-resumed. When the source's word never comes, the session ends
// IN_DOUBT with its devices stopped (../shared/docs/commit-protocol.md).
//
// Threads: Prepare, Cancel and Join from gRPC handlers; AcceptStream from the peer listener's
// handshake threads, concurrently; the device threads are the session's own. No lock is held
// while a HELLO is answered or a thread is joined.
#ifndef MIGMOVER_DAEMON_SESSION_DESTINATION_SESSION_H_
#define MIGMOVER_DAEMON_SESSION_DESTINATION_SESSION_H_

#include <array>
#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "daemon/registry/device_registry.h"
#include "daemon/session/peer_watch.h"
#include "daemon/session/session.h"
#include "daemon/session/worker_threads.h"
#include "transport/api/transport.h"
#include "daemon/session/session_secret.h"
#include "transport/api/transport_set.h"
#include "transport/tls/tls_context.h"
#include "transport/peer/frame_codec.h"
#include "transport/stream/stream_options.h"

namespace migmover {

struct DestinationConfig {
  std::string session_id;
  std::vector<std::string> devices;
  MigState final_state = MigState::kRunning;
  // What every HELLO of the session must carry (session_secret.h).
  SessionSecret token{};
  stream::StreamOptions stream;
  // The transports a source may choose (not owned; outlives the session): each HELLO goes to
  // the one that carries it; a HELLO for a transport this daemon lacks is refused.
  const transport::TransportSet* transports = nullptr;
  // Threads that receive the session's copy-path data; 0 = each device's own thread does.
  uint32_t workers = 0;
  // The TLS every peer connection this daemon accepts has run (null: --plaintext_peers). It
  // decides what checks the streams (stream_protection.h).
  std::shared_ptr<const tls::TlsContext> tls;
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

  // The secret HELLOs must prove (PrepareDestination returns it to a retry of its request).
  const SessionSecret& token() const { return config_.token; }

  // A source connection for one stream of one device, after its HELLO was read. Checks the
  // HELLO's proof of the secret, device index and count, hands the connection to the transport the HELLO asks for
  // (which answers HELLO_ACK), and starts the device's thread once all of its streams are
  // connected. Blocks until the answer is out (at most until `deadline`), holding no lock
  // meanwhile. Errors (also sent to the peer as the HELLO_ACK refusal): PermissionDenied
  // (UnrecognizedSession(), for a wrong secret, checked before anything else),
  // InvalidArgument (device count or index), AlreadyExists (device already connected),
  // FailedPrecondition (session over, or a transport this daemon lacks); the transport's.
  // `security` says what protects `socket` (peer::PeerConnection::security), for the status;
  // `tls`: whether TLS ran on it (then its AEAD checks every byte).
  absl::Status AcceptStream(const peer::Hello& hello, UniqueFd socket,
                            const std::string& security, bool tls, absl::Time deadline);

  // Aborts the session; idempotent. Refused (FailedPrecondition) once every device answered
  // COMMIT(0): the source may already have passed its point of no return, so only its CONFIRM
  // or ERROR, or the agent's Resolve after IN_DOUBT, decides what the devices do.
  absl::Status Cancel() override;
  void Join() override;

  // Settles an IN_DOUBT session, as only the agent can (it knows the source's outcome): `run`
  // when the source passed its point of no return (its session SUCCEEDED: its devices are
  // stopped for good): every device to the final state, as a CONFIRM would have; otherwise
  // (the source FAILED or was cancelled: the VM runs there) every device is reset. Either way
  // the devices are released. Errors: FailedPrecondition when the session is not IN_DOUBT; a
  // device's error on the way to the final state (the session then ends FAILED with it).
  absl::Status Resolve(bool run);

 private:
  DestinationSession(DestinationConfig config, DeviceRegistry* registry,
                     std::vector<DeviceEntry*> entries);
  void Run(size_t i, std::unique_ptr<transport::DeviceStreamReceiver> receiver);
  // The source's heartbeat connection (its HELLO checked): answered, then watched on a thread
  // of the session's. Errors: AlreadyExists for a second one; the answer's send error.
  absl::Status AcceptHeartbeat(UniqueFd socket, absl::Time deadline);
  // The source daemon stopped beating (PeerWatch's on_lost): before every device committed, the
  // migration is abandoned (the source cannot have decided); after, the waits for its word end
  // and the session is IN_DOUBT.
  void PeerLost(absl::Status why);
  // The devices whose initial precopy data is written into them since the last call (the watch
  // thread sends their LOADED before its next PONG).
  std::vector<uint32_t> NewlyLoaded();
  absl::Status PeerLostStatus();
  // The source confirmed: every device from STOP to the final state, P2P first. Returns the
  // first device's error (each failing device's is recorded in its progress); nothing goes
  // back: the source is stopped.
  absl::Status RunConfirmed();
  // Lets the transports' channels (and their threads) go once no device receives any more.
  void DropChannels();
  // Abandons a device's resume: RESET for FSM devices; for data fds, closes the agent's fd
  // (its reader sees the end) unless `close_agent_fd` is false.
  void Abandon(size_t i, bool close_agent_fd = true);
  void WorkerDone();
  void AbandonUnconnected();
  // The agent's fd of a data-fd device, read and closed under the entry's mutex.
  int AgentDataFd(size_t i);
  void CloseAgentDataFd(size_t i);
  // The session's channel of the transport that carries `hello`'s stream.
  absl::StatusOr<std::shared_ptr<transport::DestinationChannel>> ChannelFor(
      const peer::Hello& hello);

  const DestinationConfig config_;
  DeviceRegistry* registry_;
  std::vector<DeviceEntry*> entries_;
  std::vector<UniqueFd> data_fds_;  // FSM devices: the resuming fd from STOP -> RESUMING.
  std::vector<std::atomic<bool>> connected_;
  std::atomic<bool> cancel_{false};
  std::atomic<int> remaining_{0};  // Devices not yet finished (committed or abandoned).
  std::atomic<bool> confirmed_{false};  // A CONFIRM came on some device's stream.
  // The destination's side of the decision: a device counts its COMMIT(0) here before sending
  // it, unless the session was cancelled; once all did, Cancel is refused.
  absl::Mutex commit_mu_;
  size_t commits_ ABSL_GUARDED_BY(commit_mu_) = 0;
  bool cancelled_ ABSL_GUARDED_BY(commit_mu_) = false;
  absl::Status peer_lost_ ABSL_GUARDED_BY(commit_mu_);  // Why the heartbeat was lost.
  bool heartbeat_ ABSL_GUARDED_BY(commit_mu_) = false;  // A heartbeat connection was accepted.
  // Within a reconnect window the source may replace its heartbeat (PeerWatch::set_replacement):
  // the new one waits here for the watch thread, and the current one's socket (a duplicate) is
  // shut down when it comes, so the watch stops waiting on a connection the source gave up.
  std::unique_ptr<transport::HeartbeatLink> next_heartbeat_ ABSL_GUARDED_BY(commit_mu_);
  UniqueFd heartbeat_cut_ ABSL_GUARDED_BY(commit_mu_);
  // Set when a replacement came: the next NewlyLoaded names every loaded device again. The
  // watch thread's only.
  bool resend_loaded_ = false;
  // The watch thread: a replacement by `deadline`, or null.
  std::unique_ptr<transport::HeartbeatLink> AwaitHeartbeat(absl::Time deadline);
  PeerWatch watch_;
  absl::Mutex doubt_mu_;  // Also serialises Resolve.
  absl::Status doubt_ ABSL_GUARDED_BY(doubt_mu_);  // Why a committed device heard no CONFIRM.
  WorkerThreads workers_;  // The device threads and the watch thread.
  // One channel per transport the daemon offers, made at Prepare and released once every device
  // finished (their threads, such as pump workers, are not kept for an ended session). A
  // handshake holds its own reference while it answers, without the lock.
  struct Channel {
    transport::Transport* transport;
    std::shared_ptr<transport::DestinationChannel> channel;
  };
  absl::Mutex channels_mu_;
  std::vector<Channel> channels_ ABSL_GUARDED_BY(channels_mu_);
};

}  // namespace migmover

#endif  // MIGMOVER_DAEMON_SESSION_DESTINATION_SESSION_H_
