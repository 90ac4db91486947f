// DeviceStreamSender / DeviceStreamReceiver: one device's migration stream as a session drives
// it, whatever carries it. A Transport (transport.h) makes them: TCP connections on io_uring or
// plain syscalls (transport/tcp), or a DPDK link (transport/dpdk). Every implementation speaks
// the peer protocol's frames (api/PEER_PROTOCOL.md) and keeps the stream's rules
// (transport/stream/stream_rules.h); a session never looks behind these two interfaces.
#ifndef MIGMOVER_TRANSPORT_API_DEVICE_STREAM_H_
#define MIGMOVER_TRANSPORT_API_DEVICE_STREAM_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "api/peer_wire.h"
#include "transport/stream/data_path.h"

namespace migmover::transport {

using stream::DataPath;

struct PumpResult {
  enum class End {
    kEof,      // STOP_COPY: read returned 0, the device's stream is complete.
    kDrained,  // PRE_COPY: nothing more right now (read gave 0, ENOMSG or EAGAIN).
    kBudget,   // `max_bytes` were moved.
    kStopped,  // `stop` was raised (switchover): the caller changes phase and pumps again.
    kIdle,     // PumpStreamFd: nothing arrived for its idle_return; the caller pumps again.
  };
  uint64_t bytes = 0;
  End end = End::kEof;
};

struct ReceiveResult {
  uint64_t total_bytes = 0;
  // The stream's keyed digest was checked against every byte received (the copy path, and a
  // source that saw every byte).
  bool digest_checked = false;
  // An AEAD authenticated every byte: TLS carried every connection of the stream, or the DPDK
  // link's frames were sealed. `aead_name` says which, for status and logs.
  bool aead = false;
  const char* aead_name = "TLS";
  // Something checked every byte: a stream for which this is false must not be committed.
  bool checked() const { return digest_checked || aead; }
  uint32_t precopy_phases_ended = 0;
};

// What resumes after lost connections cost a stream (api/PEER_PROTOCOL.md, "Resume").
struct ResumeStats {
  uint64_t reconnections = 0;  // Resumes that succeeded.
  // From each lost connection to the stream going on again (or to giving up).
  absl::Duration time_lost = absl::ZeroDuration();
  uint64_t replayed_bytes = 0;  // Source: stream bytes sent again after resumes.
};

// Where a stream says what happened to it that a log should show (a lost connection, a
// resume): one line, without the session's or device's name. Called on the stream's thread.
using StreamLog = std::function<void(const std::string&)>;

// The source end. Pump, EndPhase, Keepalive, EndStream, AwaitCommit and SendError on one thread
// at a time (the session's device thread); the getters from any thread.
class DeviceStreamSender {
 public:
  virtual ~DeviceStreamSender() = default;
  // Moves up to `max_bytes` from `data_fd` as DATA frames of `phase`, until the fd ends (see
  // PumpResult::End), the budget is spent, or `stop` is raised. Reads 0/ENOMSG/EAGAIN in
  // PRE_COPY are "drained for now"; 0 in STOP_COPY is the end. `cancel` aborts with Cancelled.
  // Errors name the call: "read(data fd 9): EIO"; the destination's verdict if it gave up;
  // DeadlineExceeded after the idle timeout without progress.
  virtual absl::StatusOr<PumpResult> Pump(int data_fd, wire::Phase phase, uint64_t max_bytes,
                                          const std::atomic<bool>& stop,
                                          const std::atomic<bool>& cancel) = 0;
  // A VMM's own stream on a pipe or socket (data-fd mode), moved in one pump for as long as it
  // flows, whatever the pieces its writer writes: what the fd holds goes out as it arrives,
  // until the writer's end (kEof, in either phase: a stream fd has no "nothing now" read),
  // `stop` (kStopped), or nothing for `idle_return` (kIdle: the caller sends a keepalive if
  // due and pumps again). A nonblocking fd's EAGAIN is waited out. Each byte is added to
  // `*phase_bytes` (if not null) as it leaves, so a long pump's progress shows while it runs.
  // Errors: as Pump's; Unimplemented where this transport or data path has no such pump (the
  // caller then pumps what the fd holds, piece by piece).
  virtual absl::StatusOr<PumpResult> PumpStreamFd(int data_fd, wire::Phase phase,
                                                  absl::Duration idle_return,
                                                  std::atomic<uint64_t>* phase_bytes,
                                                  const std::atomic<bool>& stop,
                                                  const std::atomic<bool>& cancel) {
    return absl::UnimplementedError("no stream-fd pump on this transport");
  }
  virtual absl::Status EndPhase(wire::Phase phase) = 0;
  // INITIAL_DATA_SENT at the stream's current offset: every byte of the device's initial
  // precopy data has been pumped (PrecopyInfo::initial_bytes reached 0). At most once, in
  // PRE_COPY, before EndPhase(PRE_COPY). Errors: the send's; the destination's verdict.
  virtual absl::Status MarkInitialDataSent() = 0;
  // Tells an idle destination the source is alive (PRE_COPY with nothing to send); also
  // surfaces a destination that gave up.
  virtual absl::Status Keepalive() = 0;
  // END_STREAM with the total and, when every byte passed through userspace, its XXH3-64.
  virtual absl::Status EndStream() = 0;
  // Waits (up to `timeout`) for the destination's verdict. OK only for COMMIT with code 0;
  // otherwise the destination's code and message.
  virtual absl::Status AwaitCommit(absl::Duration timeout, const std::atomic<bool>& cancel) = 0;
  // CONFIRM: every device of the session committed and the source will not resume; the
  // destination may run its devices. Only after every device's AwaitCommit returned OK. Bounded
  // by the stream's idle timeout. Errors: the send's (Unavailable, DeadlineExceeded).
  virtual absl::Status Confirm() = 0;
  // Best effort, bounded by `wait`: tells the destination this stream is abandoned (before
  // CONFIRM, the whole migration: a destination holding a committed device resets it). A zero
  // `wait` only queues what fits now (the destination is known to be unreachable or hung).
  virtual void SendError(absl::Status why, absl::Duration wait = absl::Seconds(1)) = 0;

  // The path a Pump from `data_fd` will take (what a status shows before any byte moved).
  virtual DataPath PlannedDataPath(int data_fd) const = 0;
  virtual DataPath data_path_used() const = 0;
  // What carries the stream, for status and logs: "tcp", "tcp x 4", "dpdk link 77".
  virtual std::string transport_name() const = 0;
  // What protects the stream's bytes on the wire, for status and logs: "TLS 1.3 in the kernel
  // (TLS_AES_128_GCM_SHA256), peer CN=dst1", "plaintext", ...
  virtual std::string security() const = 0;
  virtual uint64_t bytes_sent() const = 0;
  // Also adds every byte moved to `*counter`, which must outlive this. Set before Pump.
  virtual void set_progress_counter(std::atomic<uint64_t>* counter) = 0;
  // Resumes so far (none on a transport that does not resume). Any thread.
  virtual ResumeStats resume_stats() const { return {}; }
  // Set before the first call that moves the stream.
  virtual void set_log(StreamLog log) {}
};

// The destination end. Receive, SendCommit and AwaitConfirm on one thread at a time; getters
// from any.
class DeviceStreamReceiver {
 public:
  virtual ~DeviceStreamReceiver() = default;
  // Receives until END_STREAM and returns once every byte is written to `data_fd`.
  // Errors: DataLoss for a malformed or out-of-order frame, a total or digest that disagrees;
  // Aborted with the source's message when it sent ERROR; Unavailable when it disconnected;
  // the write errno naming the call when the device refused data; Cancelled; DeadlineExceeded
  // after the idle timeout.
  virtual absl::StatusOr<ReceiveResult> Receive(int data_fd, const std::atomic<bool>& cancel) = 0;
  // COMMIT with code 0 for OK, else carrying the status's code and message; then waits (up to
  // `linger`) until the source has it.
  virtual absl::Status SendCommit(const absl::Status& result,
                                  absl::Duration linger = absl::Seconds(2)) = 0;
  // After SendCommit(OK): waits up to `timeout` for the source's last word. OK for CONFIRM (the
  // source is past its point of no return). Errors: Aborted with the source's reason for ERROR
  // (it abandoned the migration); Unavailable when it disconnected, DeadlineExceeded, Cancelled
  // (the outcome is then unknown here); DataLoss for any other frame.
  virtual absl::Status AwaitConfirm(absl::Duration timeout, const std::atomic<bool>& cancel) = 0;

  virtual DataPath PlannedDataPath(int data_fd) const = 0;
  virtual DataPath data_path_used() const = 0;
  virtual std::string transport_name() const = 0;
  // As DeviceStreamSender::security().
  virtual std::string security() const = 0;
  virtual uint64_t bytes_received() const = 0;
  virtual void set_progress_counter(std::atomic<uint64_t>* counter) = 0;
  // When INITIAL_DATA_SENT arrives, its offset is stored in `*end` (which must outlive this;
  // set before Receive): once the progress counter reaches it, the device's initial precopy
  // data is written into it.
  virtual void set_initial_data_end(std::atomic<uint64_t>* end) = 0;
  // As DeviceStreamSender's.
  virtual ResumeStats resume_stats() const { return {}; }
  virtual void set_log(StreamLog log) {}
};

}  // namespace migmover::transport

#endif  // MIGMOVER_TRANSPORT_API_DEVICE_STREAM_H_
