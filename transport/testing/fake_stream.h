// One device's migration stream held in memory, for tests: the two ends a FakeTransport hands
// to a source and a destination session in the same process. The "wire" between them is a
// queue of chunks plus the control frames' meaning (END_PHASE, END_STREAM, COMMIT, ERROR), so
// the sessions run their real logic while the test decides what the network does.
#ifndef MIGMOVER_TRANSPORT_TESTING_FAKE_STREAM_H_
#define MIGMOVER_TRANSPORT_TESTING_FAKE_STREAM_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "transport/api/device_stream.h"
#include "transport/base/stream_digest.h"
#include "transport/base/unique_fd.h"

namespace migmover::transport {

// A stream failure a test injects: once `after_bytes` stream bytes went through this end, its
// next step fails with `status`.
struct FakeFault {
  uint64_t after_bytes = 0;
  absl::Status status;
};

// A count other threads can wait on.
class WaitableCount {
 public:
  void Add(int delta) {
    absl::MutexLock l(&mu_);
    n_ += delta;
  }
  // True once the count is at least `n`; false if `timeout` passed first.
  bool AwaitAtLeast(int n, absl::Duration timeout) {
    absl::MutexLock l(&mu_);
    auto reached = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return n_ >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&reached), timeout);
  }

 private:
  absl::Mutex mu_;
  int n_ ABSL_GUARDED_BY(mu_) = 0;
};

// What both ends of one stream share. The fields before `mu` are set before the wire is
// shared; the rest is guarded by it.
struct FakeWire {
  FakeWire(uint32_t device, uint64_t max_queued) : device(device), max_queued(max_queued) {}

  const uint32_t device;
  // The most bytes in flight: a sender ahead of its receiver by this much waits, as on a
  // socket whose buffers are full.
  const uint64_t max_queued;
  // Senders blocked in AwaitCommit (FakeTransport::WaitForCommitWaiters).
  WaitableCount* commit_waiters = nullptr;
  // The socketpair standing for the stream's connection: its only use is to be a real fd the
  // destination can answer a HELLO on, so both ends stay open as long as the wire.
  UniqueFd source_end;

  absl::Mutex mu;
  UniqueFd destination_end ABSL_GUARDED_BY(mu);  // Handed over by the destination's Accept.
  std::deque<std::string> chunks ABSL_GUARDED_BY(mu);
  uint64_t queued ABSL_GUARDED_BY(mu) = 0;
  uint32_t precopy_phases_ended ABSL_GUARDED_BY(mu) = 0;
  // END_STREAM: the total and digest of every byte the sender sent.
  std::optional<uint64_t> end_total ABSL_GUARDED_BY(mu);
  uint64_t end_digest ABSL_GUARDED_BY(mu) = 0;
  // The receiver's COMMIT (OK) or refusal, and the sender's ERROR.
  std::optional<absl::Status> verdict ABSL_GUARDED_BY(mu);
  std::optional<absl::Status> abandoned ABSL_GUARDED_BY(mu);
  bool confirmed ABSL_GUARDED_BY(mu) = false;  // The sender's CONFIRM.
  // An end that was destroyed: its connection closed.
  bool sender_gone ABSL_GUARDED_BY(mu) = false;
  bool receiver_gone ABSL_GUARDED_BY(mu) = false;
  // The receiver's DeviceStreamReceiver::set_initial_data_end, which the sender's
  // MarkInitialDataSent fills at once (the count it compares with is of bytes written).
  std::atomic<uint64_t>* initial_end_out ABSL_GUARDED_BY(mu) = nullptr;
  // The receiver writes nothing while this is set (FakeTransport::HoldReceive).
  bool held ABSL_GUARDED_BY(mu) = false;
};

struct FakeStreamOptions {
  size_t chunk_size = 64 << 10;
  absl::Duration idle_timeout = absl::Seconds(30);
  std::optional<FakeFault> fault;
  // Sender only: AwaitCommit never hears the receiver's verdict (a COMMIT lost on the way).
  bool withhold_verdict = false;
  // Sender only: its CONFIRM is lost on the way (Confirm succeeds; the receiver never hears).
  bool withhold_confirm = false;
  // Sender only: Confirm waits for this first (the CONFIRM is slow to arrive); null: no wait.
  std::shared_ptr<absl::Notification> confirm_gate;
  WaitableCount* confirm_waiters = nullptr;  // Counts senders waiting at the gate.
  // Receiver only: reports the stream checked by nothing (no keyed digest, no TLS).
  bool unchecked = false;
};

class FakeSender final : public DeviceStreamSender {
 public:
  FakeSender(std::shared_ptr<FakeWire> wire, FakeStreamOptions options)
      : wire_(std::move(wire)), options_(std::move(options)) {}
  ~FakeSender() override;

  absl::StatusOr<PumpResult> Pump(int data_fd, wire::Phase phase, uint64_t max_bytes,
                                  const std::atomic<bool>& stop,
                                  const std::atomic<bool>& cancel) override;
  absl::Status EndPhase(wire::Phase phase) override;
  absl::Status Keepalive() override;
  absl::Status MarkInitialDataSent() override;
  absl::Status EndStream() override;
  absl::Status AwaitCommit(absl::Duration timeout, const std::atomic<bool>& cancel) override;
  absl::Status Confirm() override;
  void SendError(absl::Status why, absl::Duration wait = absl::Seconds(1)) override;

  DataPath PlannedDataPath(int) const override { return DataPath::kCopy; }
  DataPath data_path_used() const override { return DataPath::kCopy; }
  std::string transport_name() const override { return "fake"; }
  std::string security() const override { return "fake"; }
  uint64_t bytes_sent() const override { return sent_.load(); }
  void set_progress_counter(std::atomic<uint64_t>* counter) override { counter_ = counter; }

 private:
  // Queues one chunk once there is room. Errors: the receiver's verdict, Cancelled.
  absl::Status Push(std::string chunk, const std::atomic<bool>& cancel);
  // What a sender learns mid-stream from a receiver that gave up or went away.
  absl::Status PeerVerdictLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(wire_->mu);

  const std::shared_ptr<FakeWire> wire_;
  const FakeStreamOptions options_;
  std::atomic<uint64_t> sent_{0};
  std::atomic<uint64_t>* counter_ = nullptr;
  StreamDigest digest_;  // Of every byte read from the data fd, in order.
};

class FakeReceiver final : public DeviceStreamReceiver {
 public:
  FakeReceiver(std::shared_ptr<FakeWire> wire, FakeStreamOptions options)
      : wire_(std::move(wire)), options_(std::move(options)) {}
  ~FakeReceiver() override;

  absl::StatusOr<ReceiveResult> Receive(int data_fd, const std::atomic<bool>& cancel) override;
  absl::Status SendCommit(const absl::Status& result, absl::Duration linger) override;
  absl::Status AwaitConfirm(absl::Duration timeout, const std::atomic<bool>& cancel) override;

  DataPath PlannedDataPath(int) const override { return DataPath::kCopy; }
  DataPath data_path_used() const override { return DataPath::kCopy; }
  std::string transport_name() const override { return "fake"; }
  std::string security() const override { return "fake"; }
  uint64_t bytes_received() const override { return received_.load(); }
  void set_progress_counter(std::atomic<uint64_t>* counter) override { counter_ = counter; }
  void set_initial_data_end(std::atomic<uint64_t>* end) override {
    absl::MutexLock l(&wire_->mu);
    wire_->initial_end_out = end;
  }

 private:
  // The next chunk, or nullopt once END_STREAM came and everything before it was taken.
  absl::StatusOr<std::optional<std::string>> Pop(const std::atomic<bool>& cancel);
  absl::Status WriteFully(int data_fd, const std::string& chunk, const std::atomic<bool>& cancel);

  const std::shared_ptr<FakeWire> wire_;
  const FakeStreamOptions options_;
  std::atomic<uint64_t> received_{0};
  std::atomic<uint64_t>* counter_ = nullptr;
  StreamDigest digest_;  // Of every byte written to the data fd, in order.
};

}  // namespace migmover::transport

#endif  // MIGMOVER_TRANSPORT_TESTING_FAKE_STREAM_H_
