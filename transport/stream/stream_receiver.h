// StreamReceiver: the destination end of one device stream over TCP. After the daemon's acceptor
// has read the HELLOs and answered them, the receiver takes the stream's connections (one, or
// several when the source stripes), writes every DATA frame's payload into the device's resuming
// data fd in stream order with one of two engines, jobs on an IoQueue (a pump worker's, or the
// stream's own): the copy job (copy_receive_job.h) or the splice job (splice_receive.h), and
// checks END_STREAM (total bytes and, when both ends saw every byte, the XXH3-64 digest). The
// caller commits the device and sends the verdict with SendCommit.
//
// Striped frames are put back in order in a bounded set of buffers: each connection may hold at
// most its share of them, so a connection that runs ahead stalls (TCP pushes back on the source)
// instead of growing memory, and the connection carrying the next frame always has room for it.
//
// Thread use: Receive and SendCommit on the thread that runs the stream (its worker's jobs are
// driven elsewhere, but Receive waits for them); getters from any thread.
#ifndef MIGMOVER_TRANSPORT_STREAM_STREAM_RECEIVER_H_
#define MIGMOVER_TRANSPORT_STREAM_STREAM_RECEIVER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "api/peer_wire.h"
#include "transport/base/unique_fd.h"
#include "transport/api/device_stream.h"
#include "transport/peer/frame_codec.h"
#include "transport/stream/buffer_pool.h"
#include "transport/stream/pump_job.h"
#include "transport/stream/stream_options.h"
#include "transport/stream/stream_protection.h"
#include "transport/stream/job_runner.h"
#include "transport/stream/receive_stream.h"
#include "transport/stream/splice_io.h"
#include "transport/io/io_queue.h"

namespace migmover::stream {

using transport::ReceiveResult;

class PumpWorker;

class StreamReceiver final : public transport::DeviceStreamReceiver {
 public:
  // `sockets`: the stream's connections by stream index (the first carries control frames),
  // each past its HELLO, so the next frame on each must carry sequence number 1. `ring`: the
  // receiving thread's ring, which must outlive this; or null: the stream makes its own on the
  // first copy-path receive that needs one (on the receiving thread).
  static absl::StatusOr<std::unique_ptr<StreamReceiver>> Create(io::IoQueue* ring,
                                                                std::vector<UniqueFd> sockets,
                                                                uint32_t device,
                                                                const StreamOptions& options);
  // One connection; `next_seq`: the sequence number its next frame must carry.
  static absl::StatusOr<std::unique_ptr<StreamReceiver>> Create(io::IoQueue* ring, UniqueFd socket,
                                                                uint32_t device, uint64_t next_seq,
                                                                const StreamOptions& options);
  ~StreamReceiver() override;

  // Receives until END_STREAM and returns once every byte is written to `data_fd`.
  // Errors: DataLoss for a malformed or out-of-order frame, a total or digest that disagrees;
  // Aborted with the source's message when it sent ERROR; Unavailable when it disconnected;
  // the write errno naming the call ("write(data fd 12): EPIPE") when the device refused data;
  // Cancelled; DeadlineExceeded after the idle timeout.
  absl::StatusOr<ReceiveResult> Receive(int data_fd, const std::atomic<bool>& cancel) override;

  // After a Receive that a lost connection ended (Unavailable, or the recv's errno), with the
  // piece going into the device finished: the stream goes on over `sockets` (as many as
  // before, their HELLO answered), from the returned offset, every byte before which is in the
  // device and in the digest. The next Receive takes the source's frames from there, numbered
  // afresh; the stream's digest goes on. Errors: FailedPrecondition when the last receive did
  // not end that way (another error, a device that failed, the splice path, or END_STREAM
  // already in), InvalidArgument for another number of connections.
  absl::StatusOr<uint64_t> Resume(std::vector<UniqueFd> sockets);
  // Whether the last Receive ended so that Resume may follow.
  bool resumable() const { return r_.resumable; }
  // After Resume: accepts each new connection's resuming HELLO with the offset the stream goes
  // on from (HELLO_ACK). Errors: the sends' (the new connections failed too).
  absl::Status AnswerResume(absl::Time deadline);
  // Duplicates of the stream's connections (for a shutdown from another thread that must not
  // race their close). Errors: dup's.
  absl::StatusOr<std::vector<UniqueFd>> DupConnections() const;

  // COMMIT with code 0 for OK, else a COMMIT carrying the status's code and message. After a
  // failure it then drains and discards what the source still sends (up to `linger`) until the
  // source closes, so the verdict is read rather than lost to a connection reset.
  absl::Status SendCommit(const absl::Status& result,
                          absl::Duration linger = absl::Seconds(2)) override;
  absl::Status AwaitConfirm(absl::Duration timeout, const std::atomic<bool>& cancel) override;

  // Runs this stream's receive (copy or splice) on `worker` (shared with other streams) instead of
  // the stream's own queue; null: back to its own. The worker must outlive the receive.
  // `max_buffers`: the buffers this stream allocates (once, unregistered) for its pumps there,
  // the most one pump holds; the worker has none of its own.
  void set_worker(PumpWorker* worker, uint32_t max_buffers) {
    runner_.set_worker(worker, max_buffers);
  }

  // Splice only for one connection (striped frames are put back in order in buffers).
  DataPath PlannedDataPath(int data_fd) const override;
  std::string transport_name() const override;
  // What checks the stream's bytes (StreamProtection); before the first byte moves. Without
  // `aead` the stream keeps to the copy path. Errors: StreamMac::Create's.
  absl::Status Protect(const StreamProtection& protection);
  // What protects the connections (DeviceStreamSender::security()); set before use.
  void set_security(std::string security) { security_ = std::move(security); }
  std::string security() const override { return security_; }
  uint64_t bytes_received() const override {
    return r_.bytes_written.load(std::memory_order_relaxed);
  }
  // Also adds every byte moved to `*counter` (live progress for status readers); the counter
  // must outlive this object.
  void set_progress_counter(std::atomic<uint64_t>* counter) override { r_.counter = counter; }
  void set_initial_data_end(std::atomic<uint64_t>* end) override {
    r_.rules.set_initial_end_out(end);
  }
  DataPath data_path_used() const override { return r_.path_used.load(); }

 private:
  StreamReceiver(io::IoQueue* ring, std::vector<UniqueFd> sockets, uint32_t device,
                 uint64_t next_seq, const StreamOptions& options);

  JobRunner runner_;           // Where the engines' jobs run.
  ReceiveStream r_;            // What the engines share.
  SplicePipe pipe_;            // The splice engine's, made on first use.
  std::string security_ = "plaintext";
};

}  // namespace migmover::stream

#endif  // MIGMOVER_TRANSPORT_STREAM_STREAM_RECEIVER_H_
