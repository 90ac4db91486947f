// DestinationSession against the fake transport: what it refuses (and that a refusal changes
// nothing), and that no device is ever left in RESUMING once the session is over, whether its
// source never came, its stream failed, or the session could not be prepared.
#include "daemon/session/destination_session.h"

#include <sys/socket.h>

#include <string>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "daemon/session/session_test_fixture.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "transport/peer/handshake.h"

namespace migmover {
namespace {

using ::testing::HasSubstr;

class DestinationSessionTest : public SessionTest {
 protected:
  // A HELLO from a well-behaved source of this session, for device `device`.
  peer::Hello HelloFor(uint32_t device) const {
    peer::Hello h;
    h.session_id = dst_config.session_id;
    h.device = device;
    h.device_count = static_cast<uint32_t>(names.size());
    h.token = dst_config.token;
    return h;
  }

  // Hands `sent` to the session as the peer listener would, on one end of a socketpair, and
  // returns AcceptStream's verdict and what the source end was answered.
  struct Answer {
    absl::Status accepted;
    absl::Status acked;
  };
  Answer Offer(const peer::Hello& sent) {
    // What the destination reads: the proof of the sender's secret, never the secret.
    peer::Hello hello = sent;
    hello.proof = peer::ProveHello(sent.token, sent.fields());
    hello.token = {};
    int fds[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    UniqueFd source_end(fds[0]), destination_end(fds[1]);
    Answer a;
    a.accepted =
        dst->AcceptStream(hello, std::move(destination_end), "fake", false,
                          absl::Now() + absl::Seconds(5));
    a.acked = peer::AwaitHelloAck(source_end.get(), absl::Now() + absl::Seconds(5));
    return a;
  }

  void ExpectStillWaiting() {
    SessionSnapshot d = dst->Snapshot();
    EXPECT_EQ(d.phase, SessionPhase::kPrepared);
    EXPECT_TRUE(d.error.ok()) << d.error;
    for (size_t i = 0; i < names.size(); ++i) {
      SCOPED_TRACE(names[i]);
      EXPECT_EQ(DestinationState(i), MigState::kResuming);
      EXPECT_EQ(d.devices[i].state, "RESUMING");
      EXPECT_EQ(ClaimOf(dst_registry, names[i]), dst_config.session_id);
    }
  }
};

// The peer hears exactly what a HELLO for a session that does not exist hears (the acceptor
// answers those with UnrecognizedSession() too): no oracle for which sessions exist.
TEST_F(DestinationSessionTest, AWrongTokenIsRefusedAndChangesNothing) {
  AddDevices(2);
  ASSERT_TRUE(PrepareDestination().ok());
  peer::Hello hello = HelloFor(0);
  hello.token[0] ^= 1;

  Answer a = Offer(hello);
  EXPECT_EQ(a.accepted.code(), absl::StatusCode::kPermissionDenied) << a.accepted;
  EXPECT_EQ(a.acked.code(), absl::StatusCode::kPermissionDenied) << a.acked;
  EXPECT_THAT(std::string(a.acked.message()),
              HasSubstr(std::string(UnrecognizedSession().message())));
  EXPECT_THAT(std::string(a.accepted.message()), HasSubstr("secret does not match"))
      << "the daemon's own log says why";
  ExpectStillWaiting();

  // Nothing was taken: the real source still migrates every device.
  ASSERT_TRUE(StartSource().ok());
  ASSERT_TRUE(src->Switchover().ok());
  EXPECT_EQ(AwaitEnd(*src).phase, SessionPhase::kSucceeded);
  SessionSnapshot d = AwaitEnd(*dst);
  EXPECT_EQ(d.phase, SessionPhase::kSucceeded) << d.error;
  EXPECT_TRUE(d.verified);
}

TEST_F(DestinationSessionTest, ADeviceIndexOutOfRangeIsRefused) {
  AddDevices(2);
  ASSERT_TRUE(PrepareDestination().ok());

  Answer a = Offer(HelloFor(2));
  EXPECT_EQ(a.accepted.code(), absl::StatusCode::kInvalidArgument) << a.accepted;
  EXPECT_EQ(a.acked.code(), absl::StatusCode::kInvalidArgument) << a.acked;
  EXPECT_THAT(std::string(a.acked.message()), HasSubstr("device index 2"));
  ExpectStillWaiting();
}

TEST_F(DestinationSessionTest, ASourceWithAnotherDeviceCountIsRefused) {
  AddDevices(2);
  ASSERT_TRUE(PrepareDestination().ok());
  peer::Hello hello = HelloFor(0);
  hello.device_count = 3;

  Answer a = Offer(hello);
  EXPECT_EQ(a.accepted.code(), absl::StatusCode::kInvalidArgument) << a.accepted;
  EXPECT_THAT(std::string(a.acked.message()), HasSubstr("sends 3 devices"));
  ExpectStillWaiting();
}

TEST_F(DestinationSessionTest, CancelResetsDevicesWhoseSourceNeverConnected) {
  AddDevices(2);
  ASSERT_TRUE(PrepareDestination().ok());
  ASSERT_EQ(DestinationState(0), MigState::kResuming);

  ASSERT_TRUE(dst->Cancel().ok());
  SessionSnapshot d = AwaitEnd(*dst);
  EXPECT_EQ(d.phase, SessionPhase::kCancelled);
  for (size_t i = 0; i < 2; ++i) {
    SCOPED_TRACE(names[i]);
    EXPECT_EQ(DestinationState(i), MigState::kRunning);
    EXPECT_EQ(d.devices[i].state, "RUNNING");
    EXPECT_EQ(ClaimOf(dst_registry, names[i]), "");
  }
  // A source arriving afterwards is turned away.
  Answer a = Offer(HelloFor(0));
  EXPECT_EQ(a.accepted.code(), absl::StatusCode::kFailedPrecondition) << a.accepted;
}

TEST_F(DestinationSessionTest, AStreamErrorResetsTheDevice) {
  AddDevices(2);
  const absl::Status bad = absl::DataLossError("injected: record 3 is malformed");
  fake.receive_faults[1] = {256u << 10, bad};
  ASSERT_TRUE(PrepareDestination().ok());
  ASSERT_TRUE(StartSource().ok());

  SessionSnapshot d = AwaitEnd(*dst);
  EXPECT_EQ(d.phase, SessionPhase::kFailed);
  EXPECT_EQ(d.error, bad);
  EXPECT_EQ(d.devices[1].error, bad.message());
  for (size_t i = 0; i < 2; ++i) {
    SCOPED_TRACE(names[i]);
    EXPECT_EQ(DestinationState(i), MigState::kRunning);  // Reset: the other device's too.
    EXPECT_FALSE(d.devices[i].committed);
    EXPECT_EQ(ClaimOf(dst_registry, names[i]), "");
  }
  // The source gave up as well and kept its devices.
  SessionSnapshot s = AwaitEnd(*src);
  EXPECT_NE(s.phase, SessionPhase::kSucceeded);
  EXPECT_EQ(SourceState(0), MigState::kRunning);
  EXPECT_EQ(SourceState(1), MigState::kRunning);
}

// Verified means checked: a stream whose bytes nothing checked (a plaintext connection and a
// source that sent no keyed digest, as a relay that strips it would leave it) is not committed,
// though every byte arrived and the device would have loaded it.
TEST_F(DestinationSessionTest, AStreamNothingCheckedIsNotCommitted) {
  AddDevices(2);
  fake.unchecked_devices = {1};
  ASSERT_TRUE(PrepareDestination().ok());
  ASSERT_TRUE(StartSource().ok());
  ASSERT_TRUE(src->Switchover().ok());

  SessionSnapshot d = AwaitEnd(*dst);
  EXPECT_EQ(d.phase, SessionPhase::kFailed);
  EXPECT_EQ(d.error.code(), absl::StatusCode::kDataLoss) << d.error;
  EXPECT_THAT(std::string(d.error.message()), HasSubstr("nothing checked"));
  EXPECT_FALSE(d.verified);
  for (size_t i = 0; i < 2; ++i) {
    SCOPED_TRACE(names[i]);
    EXPECT_EQ(DestinationState(i), MigState::kRunning);  // Reset, not resumed.
    EXPECT_EQ(ClaimOf(dst_registry, names[i]), "");
  }
  EXPECT_FALSE(d.devices[1].committed);
  EXPECT_EQ(d.devices[1].integrity, "");
  SessionSnapshot s = AwaitEnd(*src);
  EXPECT_NE(s.phase, SessionPhase::kSucceeded);
  EXPECT_EQ(SourceState(0), MigState::kRunning);
  EXPECT_EQ(SourceState(1), MigState::kRunning);
}

TEST_F(DestinationSessionTest, APrepareThatFailsOnOneDeviceResetsTheOthers) {
  const sim::SimDeviceSpec spec = SmallDevice();
  AddDevices(1, spec);
  sim::SimDeviceSpec cannot_resume = BlankLike(spec);
  cannot_resume.fail_arc = true;
  cannot_resume.fail_from = MigState::kStop;
  cannot_resume.fail_to = MigState::kResuming;
  AddDevice(spec, cannot_resume);

  absl::Status prepared = PrepareDestination();
  EXPECT_EQ(prepared.code(), absl::StatusCode::kDataLoss) << prepared;  // The arc's EIO.
  EXPECT_THAT(std::string(prepared.message()), HasSubstr("dev1"));
  for (size_t i = 0; i < 2; ++i) {
    SCOPED_TRACE(names[i]);
    EXPECT_EQ(DestinationState(i), MigState::kRunning);
    EXPECT_EQ(ClaimOf(dst_registry, names[i]), "");
  }
}

TEST_F(DestinationSessionTest, ATransportThatCannotStartLeavesTheDevicesUntouched) {
  AddDevices(2);
  fake.start_destination_error = absl::ResourceExhaustedError("injected: no buffers");
  absl::Status prepared = PrepareDestination();
  EXPECT_EQ(prepared, fake.start_destination_error);
  for (size_t i = 0; i < 2; ++i) {
    SCOPED_TRACE(names[i]);
    EXPECT_EQ(DestinationState(i), MigState::kRunning);
    EXPECT_EQ(ClaimOf(dst_registry, names[i]), "");
  }
}

}  // namespace
}  // namespace migmover
