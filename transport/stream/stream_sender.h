// StreamSender: the source end of one device stream over TCP. It moves bytes from the device's
// saving data fd as DATA frames over one or more connections (striping: frames go to whichever
// connection is free, each carrying its stream offset, and the destination puts them back in
// order) with one of two engines, jobs on an IoQueue (a pump worker's, or the stream's own):
// the copy job (copy_send_job.h) or the splice job (splice_send.h), then closes the stream with
// END_STREAM (total and digest) on the first connection and waits there for the COMMIT.
//
// Thread use: all methods on the one thread that drives the stream (a pump runs on its worker,
// but Pump waits for it), except the stats getters, which any thread may call.
#ifndef MIGMOVER_TRANSPORT_STREAM_STREAM_SENDER_H_
#define MIGMOVER_TRANSPORT_STREAM_STREAM_SENDER_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "api/peer_wire.h"
#include "transport/base/unique_fd.h"
#include "transport/api/device_stream.h"
#include "transport/peer/frame_codec.h"
#include "transport/stream/buffer_pool.h"
#include "transport/stream/copy_send_job.h"
#include "transport/stream/pump_job.h"
#include "transport/stream/stream_options.h"
#include "transport/stream/stream_protection.h"
#include "transport/io/io_queue.h"
#include "transport/stream/send_stream.h"
#include "transport/stream/job_runner.h"
#include "transport/stream/splice_io.h"

namespace migmover::stream {

using transport::PumpResult;

class PumpWorker;

class StreamSender final : public transport::DeviceStreamSender {
 public:
  // Takes ownership of the connected `sockets` (1..kMaxStreamsPerDevice; the first carries the
  // control frames). `ring`: the calling thread's ring, which must outlive this; or null: the
  // stream makes its own on the first copy-path pump that needs one (on the pumping thread).
  static absl::StatusOr<std::unique_ptr<StreamSender>> Create(io::IoQueue* ring,
                                                              std::vector<UniqueFd> sockets,
                                                              uint32_t device,
                                                              const StreamOptions& options);
  static absl::StatusOr<std::unique_ptr<StreamSender>> Create(io::IoQueue* ring, UniqueFd socket,
                                                              uint32_t device,
                                                              const StreamOptions& options);
  ~StreamSender() override;

  // HELLO on every connection (its stream index and the count filled in), then waits for each
  // HELLO_ACK. Errors: the destination's refusal as its canonical code
  // with its message (e.g. NotFound "unknown session"), DataLoss for a malformed answer.
  // For a resuming HELLO, `*resume_offset` (if not null) gets the destination's HELLO_ACK
  // offset: every stream byte before it is in its device (ReplayFrom's `from`).
  absl::Status Handshake(const peer::Hello& hello, absl::Duration timeout,
                         uint64_t* resume_offset = nullptr);

  // Resuming after a pump that a lost connection ended (copy path, with a replay buffer):
  // Reconnect puts `sockets` (as many as before, connected; their HELLO still to go, by
  // Handshake, after set_channel_bindings for TLS ones) in place of the broken ones, numbered
  // afresh. ReplayFrom then takes the
  // destination's word that every byte before `from` is in its device: the held frames from
  // there go out again first in the next Pump (not in the digest again, not counted as progress
  // again), then the data fd's bytes after the last one read. Errors: InvalidArgument for
  // another number of connections; FailedPrecondition without a replay buffer; DataLoss when
  // `from` is below the destination's last ACK, past the bytes sent, or before the first byte
  // still held (it would need bytes already let go).
  absl::Status Reconnect(std::vector<UniqueFd> sockets);
  // It also says again the marks the stream carried (INITIAL_DATA_SENT, END_PHASE(PRE_COPY)) at
  // their offsets: the destination may have lost them with the connection. Errors: also the
  // sends' (Unavailable: the new connections failed too).
  absl::Status ReplayFrom(uint64_t from);
  // Sends the frames ReplayFrom left to send again, and nothing new (no read): for a resume
  // whose next word is not a pump (END_STREAM must follow every byte). Errors: as Pump's.
  absl::StatusOr<PumpResult> FlushReplay(const std::atomic<bool>& cancel);
  // Whether this stream keeps a replay buffer (StreamOptions::replay_bytes): only then can it
  // resume.
  bool replays() const { return s_.replay.enabled(); }
  // Stream bytes sent again after resumes.
  uint64_t replayed_bytes() const { return s_.replayed_bytes.load(std::memory_order_relaxed); }

  // Moves up to `max_bytes` from `data_fd` as DATA frames of `phase`, until the fd ends (see
  // PumpResult::End), the budget is spent, or `stop` is raised. Reads 0/ENOMSG/EAGAIN in
  // PRE_COPY are "drained for now"; 0 in STOP_COPY is the end. Short sends and EAGAIN are
  // requeued. `cancel` aborts with Cancelled. Errors name the call: "read(data fd 9): EIO".
  absl::StatusOr<PumpResult> Pump(int data_fd, wire::Phase phase, uint64_t max_bytes,
                                  const std::atomic<bool>& stop,
                                  const std::atomic<bool>& cancel) override;

  // See DeviceStreamSender::PumpStreamFd: the copy path only (Unimplemented where this stream
  // would splice the fd: the caller pumps piece by piece).
  absl::StatusOr<PumpResult> PumpStreamFd(int data_fd, wire::Phase phase,
                                          absl::Duration idle_return,
                                          std::atomic<uint64_t>* phase_bytes,
                                          const std::atomic<bool>& stop,
                                          const std::atomic<bool>& cancel) override;

  absl::Status EndPhase(wire::Phase phase) override;
  // Tells an idle destination the source is alive (keeps its idle timeout from firing while
  // the VM runs in PRE_COPY with nothing to send); also surfaces a destination that gave up.
  absl::Status Keepalive() override;
  absl::Status MarkInitialDataSent() override;
  // END_STREAM with the total and, when every byte passed through userspace, its XXH3-64.
  absl::Status EndStream() override;
  // Waits for the destination's verdict. OK only for COMMIT with code 0; a COMMIT or ERROR with
  // another code becomes that code with the destination's message.
  absl::Status AwaitCommit(absl::Duration timeout, const std::atomic<bool>& cancel) override;
  absl::Status Confirm() override;
  // Best effort: tells the destination this stream is abandoned.
  void SendError(absl::Status why, absl::Duration wait = absl::Seconds(1)) override;

  // Runs this stream's pumps (copy or splice) on `worker` (shared with other streams) instead
  // of the stream's own queue; null: back to its own. The worker must outlive the pumps.
  // `max_buffers`: the buffers this stream allocates (once, unregistered) for its pumps there,
  // the most one pump holds; the worker has none of its own.
  void set_worker(PumpWorker* worker, uint32_t max_buffers) {
    runner_.set_worker(worker, max_buffers);
  }

  // The first connection (HELLO and control frames); owned by this sender.
  int control_connection() const { return s_.control_fd(); }
  DataPath PlannedDataPath(int data_fd) const override;
  // "tcp", or "tcp x N" when striped over N connections.
  std::string transport_name() const override;
  // The TLS exporter value of each connection (peer::PeerConnection::binding), in order:
  // Handshake binds each connection's HELLO proof to it. Before Handshake; none in plaintext.
  void set_channel_bindings(std::vector<peer::ChannelBinding> bindings) {
    bindings_ = std::move(bindings);
  }
  // What checks the stream's bytes (StreamProtection); before the first byte moves. Without
  // `aead` the stream keeps to the copy path. Errors: StreamMac::Create's.
  absl::Status Protect(const StreamProtection& protection);
  // What protects the connections (DeviceStreamSender::security()); set before use.
  void set_security(std::string security) { security_ = std::move(security); }
  std::string security() const override { return security_; }
  uint64_t bytes_sent() const override { return s_.bytes_sent.load(std::memory_order_relaxed); }
  // Also adds every byte moved to `*counter` (live progress for status readers); the counter
  // must outlive this object.
  void set_progress_counter(std::atomic<uint64_t>* counter) override { s_.counter = counter; }
  DataPath data_path_used() const override { return s_.path_used.load(); }
  bool digest_valid() const { return s_.digest_valid; }
  // The destination's ACKs so far, and the stream bytes the last one says are in its device
  // (all of them once its COMMIT(0) came).
  uint64_t acks() const { return s_.acks.load(std::memory_order_relaxed); }
  uint64_t acked_bytes() const { return s_.acked.load(std::memory_order_relaxed); }

 private:
  StreamSender(io::IoQueue* ring, std::vector<UniqueFd> sockets, uint32_t device,
               const StreamOptions& options);
  absl::Status SendControl(const std::string& frame);
  // Runs the copy engine (see CopySendJob::Create) on this stream's runner.
  absl::StatusOr<PumpResult> Copy(int data_fd, wire::Phase phase, uint64_t max_bytes,
                                  const std::atomic<bool>& stop, const std::atomic<bool>& cancel,
                                  std::optional<CopySendJob::StreamFd> stream_fd);

  JobRunner runner_;  // Where the engines' jobs run.
  SendStream s_;      // What the engines share.
  SplicePipe pipe_;   // The splice engine's, made on first use.
  std::string security_ = "plaintext";
  std::vector<peer::ChannelBinding> bindings_;
};

}  // namespace migmover::stream

#endif  // MIGMOVER_TRANSPORT_STREAM_STREAM_SENDER_H_
