// Session: what a source and a destination migration session share: identity, phase, per-device
// progress, the first error, and change notification for WatchSession.
#ifndef MIGMOVER_DAEMON_SESSION_SESSION_H_
#define MIGMOVER_DAEMON_SESSION_SESSION_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "daemon/metrics/metrics.h"
#include "transport/api/device_stream.h"

namespace migmover {

enum class SessionRole { kSource, kDestination };
enum class SessionPhase {
  kPrepared,
  kConnecting,
  kPreCopy,
  kStopCopy,
  kCommitting,
  kSucceeded,
  kFailed,
  kCancelled,
  // Destination: every device committed and is held in STOP, but the source's CONFIRM (or its
  // ERROR) never came, so whether the VM runs here or there is not known here. The devices stay
  // stopped and claimed until the agent settles it (../shared/docs/commit-protocol.md).
  kInDoubt,
};
const char* SessionPhaseName(SessionPhase phase);
// No worker of the session runs any more (an IN_DOUBT session waits for its agent).
bool IsFinal(SessionPhase phase);
// Final and not IN_DOUBT: nothing is left to decide; the devices are released.
bool IsSettled(SessionPhase phase);

// Per-device progress. Counters are written by the device's worker and read by anyone.
struct DeviceProgress {
  std::string name;
  std::atomic<uint64_t> bytes{0};
  std::atomic<uint64_t> precopy_bytes{0};
  std::atomic<uint64_t> pending_bytes{0};
  std::atomic<uint32_t> precopy_rounds{0};
  std::atomic<bool> committed{false};
  std::atomic<bool> digest_checked{false};
  // Set before the device's worker starts: a device not yet in PRE_COPY has done no round.
  std::atomic<bool> precopy_capable{false};
  // Source: the driver's estimate of what STOP_COPY will stream (MIG_DATA_SIZE), or
  // kUnknownSize when it refuses to say (or was not asked yet).
  static constexpr uint64_t kUnknownSize = UINT64_MAX;
  std::atomic<uint64_t> stop_copy_size{kUnknownSize};
  // Switchover readiness: every byte of the initial precopy data was pumped (source), and is
  // written into the destination's device (source: its LOADED came; destination: it wrote them).
  std::atomic<bool> initial_sent{false};
  std::atomic<bool> initial_loaded{false};
  // Destination: INITIAL_DATA_SENT's offset, kUnknownSize until it came.
  std::atomic<uint64_t> initial_end{kUnknownSize};
  // Resumes of its stream (transport::ResumeStats), as Session::NoteResumes last saw them.
  std::atomic<uint32_t> reconnections{0};
  std::atomic<int64_t> time_lost_ns{0};
  std::atomic<uint64_t> replayed_bytes{0};
  // Guarded by the session's mutex.
  std::string state;
  std::string data_path;
  std::string transport;
  std::string security;
  std::string integrity;
  std::string error;
  // The rate estimate's window (Session::Snapshot), also under the session's mutex.
  absl::Time rate_time = absl::Now();
  uint64_t rate_bytes = 0;
  double rate = 0;           // Over the last window.
  double transfer_rate = 0;  // The fastest window so far: what the link can do.
};

struct DeviceSnapshot {
  std::string name, state, data_path, transport, security, integrity, error;
  uint64_t bytes = 0, precopy_bytes = 0, pending_bytes = 0;
  uint32_t precopy_rounds = 0;
  bool digest_checked = false, committed = false;
  uint64_t stop_copy_size = 0;
  bool stop_copy_size_known = false;
  bool initial_sent = false, initial_loaded = false;
  double rate_bytes_per_second = 0;
  double expected_downtime_seconds = 0;
  uint32_t reconnections = 0;
  double time_lost_seconds = 0;
  uint64_t replayed_bytes = 0;
};

struct SessionSnapshot {
  std::string id;
  SessionRole role = SessionRole::kSource;
  SessionPhase phase = SessionPhase::kPrepared;
  uint64_t bytes_moved = 0, precopy_bytes = 0, stop_copy_bytes = 0, pending_bytes = 0;
  double rate_bytes_per_second = 0;
  double expected_downtime_seconds = 0;
  uint32_t precopy_rounds = 0;
  double stop_copy_seconds = 0;
  double elapsed_seconds = 0;
  absl::Status error;
  std::vector<DeviceSnapshot> devices;
  bool verified = false;
  uint64_t version = 0;
  uint64_t bandwidth = 0;  // Source: the cap in force, 0 = none.
  // Convergence (source): the summed stop-copy sizes of the devices whose driver gives one.
  uint64_t stop_copy_size = 0;
  bool stop_copy_size_known = false;  // Every FSM device's driver gave one.
  // The fastest window's rate so far, at most the bandwidth cap: what the link can do, and what
  // the downtime estimates divide by (0: nothing moved yet, and no estimate). A precopy that
  // only trickles (the state dirties slowly) says nothing of the link: hence the fastest.
  double transfer_rate_bytes_per_second = 0;
  double downtime_limit_seconds = 0;
  // PRE_COPY, every precopy device's initial data loaded at the destination, and the expected
  // downtime within the limit: the moment to stop the vCPUs.
  bool switchover_ready = false;
  uint32_t reconnections = 0;  // The devices', summed.
  double time_lost_seconds = 0;
  uint64_t replayed_bytes = 0;
};

class Session {
 public:
  Session(std::string id, SessionRole role, const std::vector<std::string>& device_names);
  virtual ~Session() = default;

  const std::string& id() const { return id_; }
  SessionRole role() const { return role_; }

  SessionSnapshot Snapshot();
  // Returns when the session changed after `version`, or after `timeout` (with the current
  // snapshot either way).
  SessionSnapshot WaitForChange(uint64_t version, absl::Duration timeout);

  // Aborts the session; idempotent. Devices go back where a hypervisor expects them.
  // FailedPrecondition, changing nothing, once it is too late: every device committed and the
  // outcome is the source's to decide (a source past its point of no return, a destination
  // holding every device for CONFIRM, an IN_DOUBT destination).
  virtual absl::Status Cancel() = 0;
  // Blocks until every worker has finished.
  virtual void Join() = 0;

  SessionPhase phase();
  static MetricsRole MetricsRoleOf(SessionRole role);

 protected:
  void SetPhase(SessionPhase phase);
  // Records the first failure; the session becomes FAILED (or CANCELLED for Cancelled errors).
  void Fail(size_t device, const absl::Status& status);
  void SetDeviceState(size_t device, const std::string& state);
  void SetDeviceDataPath(size_t device, const std::string& path);
  // What carries the device's stream and what protects it (DeviceStreamSender::security()).
  void SetDeviceTransport(size_t device, const std::string& transport,
                          const std::string& security);
  // Destination: what checked the device's stream ("keyed digest (Poly1305) and TLS", ...).
  void SetDeviceIntegrity(size_t device, const std::string& integrity);
  // "tcp", or "tcp x N" for a stream striped over N connections.
  static std::string TcpTransportName(uint32_t streams) {
    return streams > 1 ? "tcp x " + std::to_string(streams) : "tcp";
  }
  void Touch();
  // Device `device`'s stream resumed or gave up on a resume: its counts for the status, and the
  // line for the log (one per event, as the stream words it).
  void NoteResumes(size_t device, const transport::ResumeStats& stats);
  // The stream's log (transport::StreamLog) for device `device`: its lines in the daemon's log,
  // its resume counts (`stream`'s, read when it logs) in the status.
  template <typename Stream>
  void LogStream(size_t device, Stream* stream) {
    stream->set_log([this, device, stream](const std::string& line) {
      LogDeviceLine(device, line);
      NoteResumes(device, stream->resume_stats());
    });
  }
  void LogDeviceLine(size_t device, const std::string& line);
  // Called by the last worker to finish: FAILED or CANCELLED after an error; otherwise
  // SUCCEEDED, or IN_DOUBT with `in_doubt` as the session's error (its reason) when that is set.
  void Finish(absl::Status in_doubt = absl::OkStatus());
  // IN_DOUBT -> SUCCEEDED (`outcome` OK) or FAILED (with `outcome`), as the agent settled it.
  // False when the session was not IN_DOUBT.
  bool LeaveDoubt(const absl::Status& outcome);
  absl::Status error();
  // The session ended (phase_ final): what it did, to the metrics.
  void ReportEndLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static const char* ResultName(SessionPhase phase);
  // `measured`, at most the bandwidth cap in force.
  double CappedRate(double measured) const;
  void MarkStopCopyStart();
  void MarkStopCopyEnd();

  const std::string id_;
  const SessionRole role_;
  std::vector<std::unique_ptr<DeviceProgress>> progress_;
  const absl::Time start_ = absl::Now();
  std::atomic<uint64_t> bandwidth_{0};
  // Source: switchover readiness needs the expected downtime within this (set before the
  // workers start).
  absl::Duration downtime_limit_ = absl::ZeroDuration();

 private:
  absl::Mutex mu_;
  SessionPhase phase_ ABSL_GUARDED_BY(mu_) = SessionPhase::kPrepared;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  uint64_t version_ ABSL_GUARDED_BY(mu_) = 1;
  absl::Time stop_copy_start_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Time stop_copy_end_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Time end_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  // Rate estimate over the last sample window.
  absl::Time rate_time_ ABSL_GUARDED_BY(mu_) = absl::Now();
  uint64_t rate_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  double rate_ ABSL_GUARDED_BY(mu_) = 0;
  double transfer_rate_ ABSL_GUARDED_BY(mu_) = 0;  // The fastest window's rate so far.
};

}  // namespace migmover

#endif  // MIGMOVER_DAEMON_SESSION_SESSION_H_
