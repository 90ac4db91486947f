// ResumingSender: a TCP device stream's source end that outlives its connections
// (api/PEER_PROTOCOL.md, "Resume"). It drives a StreamSender; when a call fails because a
// connection was lost (stream::IsConnectionLost: a reset, a peer that went silent past the peer
// timeout, a close without a verdict), it connects every stripe again and says a resuming HELLO
// on each (proved with the session secret like the first, the stream's nonce kept, numbered 1,
// 2, ...), until the reconnect window runs out. The destination answers with the offset its
// device has; the held frames after it go again (StreamSender::ReplayFrom), and the call that
// failed goes on: a pump pumps on, a mark or keepalive is done (the resume said the marks
// again), END_STREAM and the wait for the verdict come again after the replay.
//
// What it never does: resume a stream without a replay buffer, or past a refusal. The
// destination refuses once its receive is over (END_STREAM taken: a connection lost while the
// verdict is due is the commit protocol's in-doubt case, never mended by sending the stream
// twice) or when it lost the stream's state (a restarted daemon, a failed device, an ended
// session).
//
// Threads: as StreamSender (one driving thread; the getters from any).
#ifndef MIGMOVER_TRANSPORT_TCP_RESUMING_SENDER_H_
#define MIGMOVER_TRANSPORT_TCP_RESUMING_SENDER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "transport/api/device_stream.h"
#include "transport/base/unique_fd.h"
#include "transport/peer/frame_codec.h"
#include "transport/stream/stream_sender.h"

namespace migmover::transport {

class ResumingSender final : public DeviceStreamSender {
 public:
  // A new set of connections to the destination, as the first: connected, TLS done (their
  // bindings for the HELLO proofs), not yet greeted.
  struct Connections {
    std::vector<UniqueFd> fds;
    std::vector<peer::ChannelBinding> bindings;
    std::string security;
  };
  // Makes one by `deadline`. Errors: the connect's or TLS handshake's.
  using Connect = std::function<absl::StatusOr<Connections>(absl::Time deadline)>;

  // `inner`: the stream, handshaken with `hello` (the resuming HELLOs repeat it with their
  // number). `window`: how long after a lost connection to keep trying; zero: never resume.
  ResumingSender(std::unique_ptr<stream::StreamSender> inner, peer::Hello hello,
                 Connect connect, absl::Duration window);

  absl::StatusOr<PumpResult> Pump(int data_fd, wire::Phase phase, uint64_t max_bytes,
                                  const std::atomic<bool>& stop,
                                  const std::atomic<bool>& cancel) override;
  absl::StatusOr<PumpResult> PumpStreamFd(int data_fd, wire::Phase phase,
                                          absl::Duration idle_return,
                                          std::atomic<uint64_t>* phase_bytes,
                                          const std::atomic<bool>& stop,
                                          const std::atomic<bool>& cancel) override;
  absl::Status EndPhase(wire::Phase phase) override;
  absl::Status MarkInitialDataSent() override;
  absl::Status Keepalive() override;
  absl::Status EndStream() override;
  absl::Status AwaitCommit(absl::Duration timeout, const std::atomic<bool>& cancel) override;
  absl::Status Confirm() override { return inner_->Confirm(); }
  void SendError(absl::Status why, absl::Duration wait) override {
    inner_->SendError(std::move(why), wait);
  }

  DataPath PlannedDataPath(int data_fd) const override { return inner_->PlannedDataPath(data_fd); }
  DataPath data_path_used() const override { return inner_->data_path_used(); }
  std::string transport_name() const override { return inner_->transport_name(); }
  std::string security() const override;
  uint64_t bytes_sent() const override { return inner_->bytes_sent(); }
  void set_progress_counter(std::atomic<uint64_t>* counter) override {
    inner_->set_progress_counter(counter);
  }
  ResumeStats resume_stats() const override;
  void set_log(StreamLog log) override { log_ = std::move(log); }

 private:
  // After `lost`: reconnects and resumes within the window, or returns why not (`lost`, with
  // what the attempts met). `cancel` (may be null) ends the attempts.
  absl::Status Resume(const absl::Status& lost, const std::atomic<bool>* cancel);
  // One attempt, by `deadline`.
  absl::Status TryResume(absl::Time deadline, uint64_t* offset);
  // Resume, then the held frames out (FlushReplay): for the calls that are not pumps.
  absl::Status ResumeAndFlush(const absl::Status& lost);
  // Whether a failed call may be mended by a resume.
  bool Mendable(const absl::Status& s) const;
  void Log(const std::string& line) const {
    if (log_) log_(line);
  }

  static constexpr absl::Duration kConnectAttempt = absl::Seconds(1);

  std::unique_ptr<stream::StreamSender> inner_;
  const peer::Hello hello_;
  const Connect connect_;
  const absl::Duration window_;
  StreamLog log_;
  uint64_t resume_number_ = 0;
  // The session's cancel, as the last pump or wait passed it (the same flag every time): the
  // calls without one stop their resume on it too.
  const std::atomic<bool>* cancel_ = nullptr;
  bool committed_ = false;  // The destination's COMMIT(0) came.
  std::atomic<uint64_t> reconnections_{0};
  std::atomic<int64_t> lost_ns_{0};
  // What protects the connections now, for readers on other threads.
  mutable absl::Mutex security_mu_;
  std::string security_ ABSL_GUARDED_BY(security_mu_);
};

}  // namespace migmover::transport

#endif  // MIGMOVER_TRANSPORT_TCP_RESUMING_SENDER_H_
