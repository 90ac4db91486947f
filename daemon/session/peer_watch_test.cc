// The session heartbeat (PeerWatch) between a real source and destination session joined by the
// fake transport, whose heartbeat is a real connection: a peer daemon that stops beating (hung,
// or cut off) is noticed within the peer timeout in the phases where no stream byte is due, and
// each side then keeps the outcome rule. The idle timeout is a minute here, so a session that
// ends within seconds ended because of the heartbeat.
#include "daemon/session/peer_watch.h"

#include <string>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "daemon/session/session_test_fixture.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace migmover {
namespace {

using ::testing::HasSubstr;

constexpr absl::Duration kPeerTimeout = absl::Seconds(1);
// Well under the idle timeout: only the heartbeat can end a wait this soon.
constexpr absl::Duration kDetectionBound = absl::Seconds(10);

class PeerWatchTest : public SessionTest {
 protected:
  PeerWatchTest() {
    for (stream::StreamOptions* o : {&src_config.stream, &dst_config.stream}) {
      o->idle_timeout = absl::Seconds(60);
      o->peer_timeout = kPeerTimeout;
    }
  }
};

TEST(PeerWatchIntervalTest, SourcePingsFiveTimesPerTimeoutAtMostEveryHalfSecond) {
  EXPECT_EQ(PeerWatch::IntervalFor(absl::Seconds(1)), absl::Milliseconds(200));
  EXPECT_EQ(PeerWatch::IntervalFor(absl::Seconds(60)), absl::Milliseconds(500));
  stream::StreamOptions o;
  o.peer_timeout = absl::ZeroDuration();
  o.idle_timeout = absl::Seconds(7);
  EXPECT_EQ(PeerWatch::TimeoutFor(o), absl::Seconds(7));
}

// PRE_COPY with nothing to send: the source's KEEPALIVEs fit in the socket buffers of a
// destination daemon that is hung, so only its missing PONGs tell.
TEST_F(PeerWatchTest, ADestinationThatStopsAnsweringInPreCopyIsAbandonedWithinThePeerTimeout) {
  AddDevices(2);
  ASSERT_TRUE(PrepareDestination().ok());
  ASSERT_TRUE(StartSource().ok());
  ASSERT_TRUE(PrecopyRoundDone(AwaitSnapshot(*src, PrecopyRoundDone)));

  const absl::Time cut = absl::Now();
  fake.drop_pongs = true;
  SessionSnapshot s = AwaitEnd(*src);
  const absl::Duration noticed = absl::Now() - cut;
  EXPECT_EQ(s.phase, SessionPhase::kFailed);
  EXPECT_EQ(s.error.code(), absl::StatusCode::kDeadlineExceeded) << s.error;
  EXPECT_THAT(std::string(s.error.message()), HasSubstr("answered no PING"));
  // Silent for a whole timeout since the last PONG, which came at most an interval before.
  EXPECT_GE(noticed, kPeerTimeout - PeerWatch::IntervalFor(kPeerTimeout));
  EXPECT_LT(noticed, kDetectionBound);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(SourceState(i), MigState::kRunning) << names[i];
    EXPECT_EQ(s.devices[i].error, s.error.message()) << names[i];
  }
  // The destination heard the source's ERROR, with the reason, and reset its devices.
  SessionSnapshot d = AwaitEnd(*dst);
  EXPECT_EQ(d.phase, SessionPhase::kFailed) << d.error;
  EXPECT_THAT(std::string(d.error.message()), HasSubstr("answered no PING"));
  ExpectNeverLiveOnBoth();
}

// The source daemon stops beating while the destination waits for PRE_COPY data: the
// destination gives up within its peer timeout and resets its devices (the source cannot have
// decided: nothing committed).
TEST_F(PeerWatchTest, ASourceThatStopsBeatingInPreCopyIsAbandonedByTheDestination) {
  AddDevices(2);
  // The source hears no PONG either (no PING arrives to answer): give it longer, so that the
  // destination is the one that notices.
  src_config.stream.peer_timeout = 3 * kPeerTimeout;
  ASSERT_TRUE(PrepareDestination().ok());
  ASSERT_TRUE(StartSource().ok());
  ASSERT_TRUE(PrecopyRoundDone(AwaitSnapshot(*src, PrecopyRoundDone)));

  const absl::Time cut = absl::Now();
  fake.drop_pings = true;
  SessionSnapshot d = AwaitEnd(*dst);
  const absl::Duration noticed = absl::Now() - cut;
  EXPECT_EQ(d.phase, SessionPhase::kFailed);
  EXPECT_EQ(d.error.code(), absl::StatusCode::kDeadlineExceeded) << d.error;
  EXPECT_THAT(std::string(d.error.message()), HasSubstr("sent no PING"));
  EXPECT_LT(noticed, kDetectionBound);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_NE(DestinationState(i), MigState::kResuming) << names[i];
    EXPECT_FALSE(d.devices[i].committed) << names[i];
    EXPECT_EQ(ClaimOf(dst_registry, names[i]), "") << names[i];
  }
  // The source heard no PONG either (or the destination's ERROR): its VM runs there.
  const absl::Time dst_ended = absl::Now();
  SessionSnapshot s = AwaitEnd(*src);
  EXPECT_LT(absl::Now() - dst_ended, kDetectionBound);
  EXPECT_EQ(s.phase, SessionPhase::kFailed) << s.error;
  for (size_t i = 0; i < 2; ++i) EXPECT_EQ(SourceState(i), MigState::kRunning) << names[i];
  ExpectNeverLiveOnBoth();
}

// The destination hangs while the source waits for its COMMITs (before: up to four idle
// timeouts with the VM paused): the source abandons within the peer timeout and runs the VM.
TEST_F(PeerWatchTest, ADestinationThatStopsAnsweringWhileCommittingIsAbandonedAtOnce) {
  AddDevices(2);
  fake.withhold_verdicts = true;
  ASSERT_TRUE(PrepareDestination().ok());
  ASSERT_TRUE(StartSource().ok());
  ASSERT_TRUE(src->Switchover().ok());
  ASSERT_TRUE(fake.WaitForCommitWaiters(2, absl::Seconds(30)));

  const absl::Time cut = absl::Now();
  fake.drop_pongs = true;
  SessionSnapshot s = AwaitEnd(*src);
  EXPECT_LT(absl::Now() - cut, kDetectionBound);
  EXPECT_EQ(s.phase, SessionPhase::kFailed);
  EXPECT_THAT(std::string(s.error.message()), HasSubstr("answered no PING"));
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(SourceState(i), MigState::kRunning) << names[i];
    EXPECT_FALSE(s.devices[i].committed) << names[i];
  }
  // The destination had committed (only its answers were withheld): the source's ERROR
  // resets them.
  SessionSnapshot d = AwaitEnd(*dst);
  EXPECT_EQ(d.phase, SessionPhase::kFailed) << d.error;
  ExpectNeverLiveOnBoth();
}

// Every device committed and the source decided, its CONFIRMs held back, when its daemon stops
// beating: the destination cannot know the outcome, so it neither runs nor resets; it is
// IN_DOUBT within its peer timeout (not the idle timeout), and its agent settles it.
TEST_F(PeerWatchTest, ASourceThatStopsBeatingAfterEveryCommitLeavesTheDestinationInDoubt) {
  AddDevices(2);
  src_config.stream.peer_timeout = 3 * kPeerTimeout;  // The destination notices first.
  fake.HoldConfirms();
  ASSERT_TRUE(PrepareDestination().ok());
  ASSERT_TRUE(StartSource().ok());
  ASSERT_TRUE(src->Switchover().ok());
  ASSERT_TRUE(fake.WaitForConfirmWaiters(2, absl::Seconds(30)));

  const absl::Time cut = absl::Now();
  fake.drop_pings = true;
  SessionSnapshot d = AwaitSnapshot(*dst, [](const SessionSnapshot& s) { return IsFinal(s.phase); });
  EXPECT_LT(absl::Now() - cut, kDetectionBound);
  EXPECT_EQ(d.phase, SessionPhase::kInDoubt) << d.error;
  EXPECT_THAT(std::string(d.error.message()), HasSubstr("sent no PING"));
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(DestinationState(i), MigState::kStop) << names[i];
    EXPECT_EQ(ClaimOf(dst_registry, names[i]), dst_config.session_id) << names[i];
  }
  // Past its point of no return, the source ignores its own lost heartbeat and completes.
  fake.ReleaseConfirms();
  SessionSnapshot s = AwaitEnd(*src);
  EXPECT_EQ(s.phase, SessionPhase::kSucceeded) << s.error;
  for (size_t i = 0; i < 2; ++i) EXPECT_EQ(SourceState(i), MigState::kStop) << names[i];
  ExpectNeverLiveOnBoth();
  ASSERT_TRUE(dst->Resolve(/*run=*/true).ok());
  for (size_t i = 0; i < 2; ++i) EXPECT_TRUE(DestinationRunsMigratedState(i)) << names[i];
}

// A heartbeat that keeps beating ends nothing, however long the stream stays idle.
TEST_F(PeerWatchTest, AnIdleMigrationWithLiveDaemonsOutlastsManyPeerTimeouts) {
  AddDevices(1);
  ASSERT_TRUE(PrepareDestination().ok());
  ASSERT_TRUE(StartSource().ok());
  ASSERT_TRUE(PrecopyRoundDone(AwaitSnapshot(*src, PrecopyRoundDone)));
  // Three peer timeouts of idle PRE_COPY, waiting on the session's own notifications.
  SessionSnapshot s = AwaitSnapshot(
      *src, [](const SessionSnapshot& s) { return IsFinal(s.phase); }, 3 * kPeerTimeout);
  EXPECT_FALSE(IsFinal(s.phase)) << s.error;
  ASSERT_TRUE(src->Switchover().ok());
  EXPECT_EQ(AwaitEnd(*src).phase, SessionPhase::kSucceeded);
  EXPECT_EQ(AwaitEnd(*dst).phase, SessionPhase::kSucceeded);
}

// A migration does not go on without its heartbeat: the idle phases would have no other sign of
// a hung destination. The source fails with the reason and runs; the destination resets.
TEST_F(PeerWatchTest, ASourceThatCannotOpenItsHeartbeatAbandonsTheMigration) {
  AddDevices(2);
  fake.heartbeat_open_error = absl::UnavailableError("injected: connection refused");
  ASSERT_TRUE(PrepareDestination().ok());
  ASSERT_TRUE(StartSource().ok());
  SessionSnapshot s = AwaitEnd(*src);
  EXPECT_EQ(s.phase, SessionPhase::kFailed);
  EXPECT_EQ(s.error.code(), absl::StatusCode::kUnavailable) << s.error;
  EXPECT_THAT(std::string(s.error.message()), HasSubstr("heartbeat"));
  for (size_t i = 0; i < 2; ++i) EXPECT_EQ(SourceState(i), MigState::kRunning) << names[i];
  EXPECT_EQ(AwaitEnd(*dst).phase, SessionPhase::kFailed);
  ExpectNeverLiveOnBoth();
}

}  // namespace
}  // namespace migmover
