// ResumingReceiver: a TCP device stream's destination end that outlives its connections
// (api/PEER_PROTOCOL.md, "Resume"). It drives a StreamReceiver; when a receive ends on a lost
// connection with every byte it took written into the device (StreamReceiver::resumable), it
// waits up to the reconnect window for the source's resume (ResumeSlot), goes on over the new
// connections from the bytes written, and tells the source where (HELLO_ACK). To the session it
// is one Receive: the stream's bytes land once, the digest covers them once.
//
// No resume once the stream's END_STREAM came (the verdict is what is due then), after any
// other failure, or when no resume comes within the window: the receive fails as it would have
// without one, and resumes offered later are refused.
//
// Threads: as StreamReceiver (one driving thread; the getters from any).
#ifndef MIGMOVER_TRANSPORT_TCP_RESUMING_RECEIVER_H_
#define MIGMOVER_TRANSPORT_TCP_RESUMING_RECEIVER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "transport/api/device_stream.h"
#include "transport/stream/stream_receiver.h"
#include "transport/tcp/resume_slot.h"

namespace migmover::transport {

class ResumingReceiver final : public DeviceStreamReceiver {
 public:
  // `slot`: where this stream's resumes arrive (shared with the channel that offers them).
  // `window`: how long after a lost connection to wait for one; zero: never.
  ResumingReceiver(std::unique_ptr<stream::StreamReceiver> inner,
                   std::shared_ptr<ResumeSlot> slot, absl::Duration window);
  ~ResumingReceiver() override;

  absl::StatusOr<ReceiveResult> Receive(int data_fd, const std::atomic<bool>& cancel) override;
  absl::Status SendCommit(const absl::Status& result, absl::Duration linger) override {
    return inner_->SendCommit(result, linger);
  }
  absl::Status AwaitConfirm(absl::Duration timeout, const std::atomic<bool>& cancel) override {
    return inner_->AwaitConfirm(timeout, cancel);
  }

  DataPath PlannedDataPath(int data_fd) const override { return inner_->PlannedDataPath(data_fd); }
  DataPath data_path_used() const override { return inner_->data_path_used(); }
  std::string transport_name() const override { return inner_->transport_name(); }
  std::string security() const override;
  uint64_t bytes_received() const override { return inner_->bytes_received(); }
  void set_progress_counter(std::atomic<uint64_t>* counter) override {
    inner_->set_progress_counter(counter);
  }
  void set_initial_data_end(std::atomic<uint64_t>* end) override {
    inner_->set_initial_data_end(end);
  }
  ResumeStats resume_stats() const override;
  void set_log(StreamLog log) override { log_ = std::move(log); }

 private:
  void Log(const std::string& line) const {
    if (log_) log_(line);
  }

  std::unique_ptr<stream::StreamReceiver> inner_;
  const std::shared_ptr<ResumeSlot> slot_;
  const absl::Duration window_;
  StreamLog log_;
  std::atomic<uint64_t> reconnections_{0};
  std::atomic<int64_t> lost_ns_{0};
  mutable absl::Mutex security_mu_;
  std::string security_ ABSL_GUARDED_BY(security_mu_);
};

}  // namespace migmover::transport

#endif  // MIGMOVER_TRANSPORT_TCP_RESUMING_RECEIVER_H_
