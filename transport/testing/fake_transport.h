// FakeTransport: an in-memory Transport ("fake") that joins a source and a destination session
// in one process, so session tests run the sessions' real logic with no sockets, rings or
// timing of their own. The test points `deliver` at the destination session's AcceptStream:
// a source's Open builds the HELLO from its SessionSpec and hands it over exactly as the peer
// listener would, with one end of a socketpair as the connection (the destination answers
// refusals on it); the destination's Accept then returns the stream's receiver.
//
// The knobs below are plain fields: set them before the sessions start (the device threads
// read them without a lock).
#ifndef MIGMOVER_TRANSPORT_TESTING_FAKE_TRANSPORT_H_
#define MIGMOVER_TRANSPORT_TESTING_FAKE_TRANSPORT_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "transport/api/transport.h"
#include "transport/base/unique_fd.h"
#include "transport/peer/frame_codec.h"
#include "transport/testing/fake_stream.h"

namespace migmover::transport {

class FakeTransport final : public Transport {
 public:
  // Where a source's HELLO goes: normally DestinationSession::AcceptStream. Its error is the
  // source's Open error, as a refusal would be.
  std::function<absl::Status(const peer::Hello&, UniqueFd, absl::Time)> deliver;

  // Fault injection, by device index (both sessions use the same indices).
  std::map<uint32_t, absl::Status> open_errors;  // Open fails with this, before any HELLO.
  std::map<uint32_t, FakeFault> pump_faults;     // The sender's Pump fails (a network error).
  std::map<uint32_t, FakeFault> receive_faults;  // The receiver's Receive fails (the destination).
  // Receivers of these devices report their streams checked by nothing (a plaintext
  // connection whose source sent no keyed digest): the destination must not commit them.
  std::set<uint32_t> unchecked_devices;
  bool withhold_verdicts = false;        // AwaitCommit never hears the destination's verdict.
  bool withhold_confirms = false;        // The source's CONFIRMs never reach the destination.
  // Until released, every CONFIRM waits in the source's Confirm (set before the sessions start).
  void HoldConfirms() { confirm_gate_ = std::make_shared<absl::Notification>(); }
  void ReleaseConfirms() {
    if (confirm_gate_ && !confirm_gate_->HasBeenNotified()) confirm_gate_->Notify();
  }
  absl::Status start_destination_error;  // StartDestination fails with this when not OK.
  // The session heartbeat is real (a socketpair delivered like a stream's, PING/PONG by the
  // sessions' watch threads); these drop beats from now on, as a hung peer would: the source's
  // PINGs never reach the destination (both ends then hear nothing), or the destination's PONGs
  // never reach the source (only the source does). Any thread, any time.
  std::atomic<bool> drop_pings{false};
  std::atomic<bool> drop_pongs{false};
  absl::Status heartbeat_open_error;  // OpenHeartbeat fails with this when not OK.
  // Bytes a sender may be ahead of its receiver, as a socket's buffers would allow: a sender
  // with more to send then waits in Pump, where it hears at once from a receiver that gave up.
  uint64_t max_queued_bytes = 1u << 20;

  absl::string_view name() const override { return "fake"; }
  uint32_t max_streams_per_device() const override { return 1; }
  bool Carries(const peer::Hello&) const override { return true; }

  // Errors: InvalidArgument for a spec striping a device over more than one stream.
  absl::StatusOr<std::unique_ptr<SourceChannel>> StartSource(const SessionSpec& spec) override;
  absl::StatusOr<std::unique_ptr<DestinationChannel>> StartDestination(
      const SessionSpec& spec) override;

  // SourceChannel::Open calls so far, failed ones included.
  int opens() const { return opens_.load(); }
  // Until ResumeReceive, device `device`'s receiver writes nothing into its device (the data
  // waits on the wire), whether its stream is open already or opens later.
  void HoldReceive(uint32_t device);
  void ResumeReceive(uint32_t device);
  // Until ReleaseOpen, device `device`'s Open waits before its HELLO (a slow connect).
  void HoldOpen(uint32_t device);
  void ReleaseOpen(uint32_t device);
  // Waits until `n` senders wait at the HoldConfirms gate (true: the source decided), or
  // `timeout` passed.
  bool WaitForConfirmWaiters(int n, absl::Duration timeout) {
    return confirm_waiters_.AwaitAtLeast(n, timeout);
  }
  // Waits until `n` senders are inside AwaitCommit (true), or `timeout` passed.
  bool WaitForCommitWaiters(int n, absl::Duration timeout);

 private:
  friend class FakeSourceChannel;
  friend class FakeDestinationChannel;
  using Key = std::pair<std::string, uint32_t>;  // Session id, device.

  absl::StatusOr<std::unique_ptr<DeviceStreamSender>> Open(const SessionSpec& spec, uint32_t device,
                                                           absl::Duration timeout);
  absl::StatusOr<std::unique_ptr<HeartbeatLink>> OpenHeartbeat(const SessionSpec& spec,
                                                                absl::Duration timeout);
  absl::StatusOr<std::unique_ptr<DeviceStreamReceiver>> Accept(const SessionSpec& spec,
                                                               const peer::Hello& hello,
                                                               UniqueFd connection);
  FakeStreamOptions OptionsFor(const SessionSpec& spec, const std::map<uint32_t, FakeFault>& faults,
                               uint32_t device) const;

  std::atomic<int> opens_{0};
  std::shared_ptr<absl::Notification> confirm_gate_;
  WaitableCount confirm_waiters_;
  WaitableCount commit_waiters_;
  absl::Mutex mu_;
  // Opened streams whose destination has not accepted them yet.
  std::map<Key, std::shared_ptr<FakeWire>> waiting_ ABSL_GUARDED_BY(mu_);
  // Every stream opened, for HoldReceive / ResumeReceive.
  std::map<Key, std::shared_ptr<FakeWire>> all_ ABSL_GUARDED_BY(mu_);
  std::map<uint32_t, bool> held_ ABSL_GUARDED_BY(mu_);
  std::map<uint32_t, bool> held_opens_ ABSL_GUARDED_BY(mu_);
};

}  // namespace migmover::transport

#endif  // MIGMOVER_TRANSPORT_TESTING_FAKE_TRANSPORT_H_
