// Faults between two real daemons, each in its own network namespace, injected on the veth
// between them with nftables (netns_pair.h): a silent cut and a reset at different points of a
// migration, and packet loss. Every case asserts the outcome rule (never running on both
// hosts; the source back in RUNNING when the destination did not commit; the destination never
// left in RESUMING), that the failure is noticed within the peer timeout, and that a new
// migration of the same devices then succeeds.
#include <csignal>
#include <iostream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/faults/delay_line.h"
#include "tests/faults/fault_fixture.h"

namespace migmover::testing {
namespace {

TEST_F(FaultTest, ASilentCutDuringPreCopyIsNoticedWithinThePeerTimeout) {
  AttachPair("d0", "size=32MiB,dirty_rate=16MiB");
  ASSERT_TRUE(Prepare("cut-pre", {"d0"}).ok());
  ASSERT_TRUE(Start("cut-pre", {"d0"}, /*precopy=*/true).ok());
  WatchUntilRounds("cut-pre", 1);
  const absl::Time cut = absl::Now();
  ASSERT_TRUE(net_->Drop().ok());
  Outcome o = AwaitBoth("cut-pre", cut);
  EXPECT_EQ(o.ended.source.phase(), SessionStatus::FAILED) << o.ended.source.DebugString();
  EXPECT_EQ(o.ended.destination.phase(), SessionStatus::FAILED);
  ExpectOutcomeRule(o.ended, "d0");
  ExpectNoticedInTime(o, "silent_cut_pre_copy");
  ExpectANewMigrationSucceeds("after-cut-pre", "d0");
}

TEST_F(FaultTest, ASilentCutDuringStopCopyIsNoticedWithinThePeerTimeout) {
  StartLongStopCopy("cut-stop");  // About 8 s of STOP_COPY: the cut lands inside it.
  const absl::Time cut = absl::Now();
  ASSERT_TRUE(net_->Drop().ok());
  Outcome o = AwaitBoth("cut-stop", cut);
  EXPECT_EQ(o.ended.source.phase(), SessionStatus::FAILED) << o.ended.source.DebugString();
  EXPECT_EQ(o.ended.destination.phase(), SessionStatus::FAILED);
  ExpectOutcomeRule(o.ended, "d0");
  ExpectNoticedInTime(o, "silent_cut_stop_copy");
  ExpectANewMigrationSucceeds("after-cut-stop", "d0");
}

TEST_F(FaultTest, AResetDuringStopCopyFailsBothSidesAtOnce) {
  StartLongStopCopy("reset-stop");
  const absl::Time reset = absl::Now();
  ASSERT_TRUE(net_->Reset().ok());
  Outcome o = AwaitBoth("reset-stop", reset);
  EXPECT_EQ(o.ended.source.phase(), SessionStatus::FAILED) << o.ended.source.DebugString();
  EXPECT_EQ(o.ended.destination.phase(), SessionStatus::FAILED);
  ExpectOutcomeRule(o.ended, "d0");
  ExpectNoticedInTime(o, "reset_stop_copy");
  ExpectANewMigrationSucceeds("after-reset-stop", "d0");
}

// The destination daemon dies mid STOP_COPY: its kernel resets the connections, the source
// fails at once and runs its VM again; a new destination daemon then takes the migration.
TEST_F(FaultTest, TheDestinationKilledDuringStopCopyLeavesTheSourceRunning) {
  StartLongStopCopy("kill-dst");
  const absl::Time kill = absl::Now();
  ASSERT_EQ(::kill(dst_->pid(), SIGKILL), 0);
  SessionStatus s = WaitFinal(*src_, "kill-dst", 30);
  const absl::Duration noticed = absl::Now() - kill;
  std::cout << "fault kill_destination_stop_copy: source ended after "
            << absl::FormatDuration(noticed) << std::endl;
  EXPECT_EQ(s.phase(), SessionStatus::FAILED) << s.DebugString();
  EXPECT_EQ(StateOf(*src_, "d0"), "RUNNING");
  EXPECT_LE(noticed, absl::Milliseconds(kPeerTimeoutMs) + kDetectionSlack);
  Restart(dst_, "dst2", dst_flags_, dst_launch_);
  ASSERT_TRUE(Attach(*dst_, "d0", "size=128MiB").ok());
  ExpectANewMigrationSucceeds("after-kill-dst", "d0");
}

// The source daemon dies mid STOP_COPY: the destination fails at once and resets its device
// (it never held a committed one); a new source daemon then migrates again.
TEST_F(FaultTest, TheSourceKilledDuringStopCopyLeavesNothingHalfResumed) {
  StartLongStopCopy("kill-src");
  const absl::Time kill = absl::Now();
  ASSERT_EQ(::kill(src_->pid(), SIGKILL), 0);
  SessionStatus d = WaitFinal(*dst_, "kill-src", 30);
  const absl::Duration noticed = absl::Now() - kill;
  std::cout << "fault kill_source_stop_copy: destination ended after "
            << absl::FormatDuration(noticed) << std::endl;
  EXPECT_EQ(d.phase(), SessionStatus::FAILED) << d.DebugString();
  EXPECT_EQ(StateOf(*dst_, "d0"), "RUNNING") << "reset, not left in RESUMING";
  EXPECT_LE(noticed, absl::Milliseconds(kPeerTimeoutMs) + kDetectionSlack);
  Restart(src_, "src2", src_flags_, src_launch_);
  ASSERT_TRUE(Attach(*src_, "d0", "size=128MiB").ok());
  ExpectANewMigrationSucceeds("after-kill-src", "d0");
}

// The destination daemon hangs (SIGSTOP) mid STOP_COPY: its kernel still acknowledges, but once
// its buffers are full its window stays shut, so the source fails after the buffers fill and the
// peer timeout passes (zero-window probes back off in between: 5.3 s with a 3 s timeout here,
// hence twice the timeout as the bound) and runs its VM again. When the destination resumes it
// finds its connection gone and resets its device.
TEST_F(FaultTest, TheDestinationHungDuringStopCopyIsNoticedWithinThePeerTimeout) {
  StartLongStopCopy("stop-dst");
  const absl::Time stop = absl::Now();
  ASSERT_EQ(::kill(dst_->pid(), SIGSTOP), 0);
  SessionStatus s = WaitFinal(*src_, "stop-dst", 30);
  const absl::Duration noticed = absl::Now() - stop;
  ASSERT_EQ(::kill(dst_->pid(), SIGCONT), 0);
  std::cout << "fault hang_destination_stop_copy: source ended after "
            << absl::FormatDuration(noticed) << std::endl;
  EXPECT_EQ(s.phase(), SessionStatus::FAILED) << s.DebugString();
  EXPECT_EQ(StateOf(*src_, "d0"), "RUNNING");
  EXPECT_LE(noticed, absl::Milliseconds(2 * kPeerTimeoutMs) + kDetectionSlack);
  SessionStatus d = WaitFinal(*dst_, "stop-dst", 30);
  EXPECT_EQ(d.phase(), SessionStatus::FAILED) << d.DebugString();
  EXPECT_NE(StateOf(*dst_, "d0"), "RESUMING");
  ExpectANewMigrationSucceeds("after-stop-dst", "d0");
}

// The cut lands after END_STREAM, while the destination loads its device (RESUMING -> STOP
// takes 4 s here). Neither side hears the other's heartbeat for the peer timeout: the source,
// which has no COMMIT, abandons and runs its VM; the destination, whose commit was not yet
// counted when it lost the source (so the source cannot have decided), resets its device once
// the load ends. No doubt on either side.
TEST_F(FaultTest, ACutWhileTheDestinationCommitsAbandonsTheMigrationOnBothSides) {
  ASSERT_TRUE(Attach(*src_, "d0", "size=8MiB").ok());
  ASSERT_TRUE(Attach(*dst_, "d0", "size=8MiB,commit_delay_ms=4000").ok());
  StartUntilDestinationCommits("cut-commit");
  const absl::Time cut = absl::Now();
  ASSERT_TRUE(net_->Drop().ok());
  Outcome o = AwaitBoth("cut-commit", cut);
  EXPECT_EQ(o.ended.source.phase(), SessionStatus::FAILED) << o.ended.source.DebugString();
  EXPECT_EQ(o.ended.destination.phase(), SessionStatus::FAILED)
      << o.ended.destination.DebugString();
  ExpectOutcomeRule(o.ended, "d0");
  EXPECT_EQ(StateOf(*dst_, "d0"), "RUNNING") << "reset";
  ExpectNoticedInTime(o, "silent_cut_while_committing");
  ExpectANewMigrationSucceeds("after-cut-commit", "d0");
}

// A one-way cut (nothing from the source reaches the destination) while the destination loads
// its device (1 s). The destination had counted its commit, so when the source's heartbeat stops
// it cannot know whether the VM runs there: IN_DOUBT, its device held in STOP (CancelSession
// refused). Its COMMIT reaches the source if its connection can still send: then the source
// passes its point of no return and SUCCEEDS (the CONFIRM is lost); but an ACK of the stream
// still unacknowledged when the cut came leaves that connection retransmitting it, the COMMIT
// queued behind, and the source abandons and runs its VM. Either way the agent settles the
// destination from the source's outcome (RUN, or ABANDON), and the VM runs on one host.
TEST_F(FaultTest, AOneWayCutAfterTheCommitLeavesTheDestinationInDoubtUntilItsAgentSettlesIt) {
  ASSERT_TRUE(Attach(*src_, "d0", "size=8MiB").ok());
  ASSERT_TRUE(Attach(*dst_, "d0", "size=8MiB,commit_delay_ms=1000").ok());
  StartUntilDestinationCommits("doubt");
  const absl::Time cut = absl::Now();
  ASSERT_TRUE(net_->DropFromA().ok());
  Outcome o = AwaitBoth("doubt", cut);
  const bool source_succeeded = o.ended.source.phase() == SessionStatus::SUCCEEDED;
  std::cout << "fault one_way_cut_after_commit: source "
            << SessionStatus::Phase_Name(o.ended.source.phase()) << std::endl;
  if (!source_succeeded) {
    EXPECT_EQ(o.ended.source.phase(), SessionStatus::FAILED) << o.ended.source.DebugString();
  }
  EXPECT_EQ(o.ended.destination.phase(), SessionStatus::IN_DOUBT)
      << o.ended.destination.DebugString();
  ExpectOutcomeRule(o.ended, "d0");
  ExpectNoticedInTime(o, "one_way_cut_after_commit");
  {
    grpc::ClientContext ctx;
    v1::CancelSessionRequest req;
    req.set_session_id("doubt");
    SessionStatus out;
    EXPECT_EQ(dst_->stub()->CancelSession(&ctx, req, &out).error_code(),
              grpc::StatusCode::FAILED_PRECONDITION);
  }
  EXPECT_EQ(StateOf(*dst_, "d0"), "STOP");
  const SessionStatus settled = Settle("doubt", o.ended.source, o.ended.destination);
  if (source_succeeded) {
    EXPECT_EQ(settled.phase(), SessionStatus::SUCCEEDED) << settled.DebugString();
    EXPECT_EQ(StateOf(*dst_, "d0"), "RUNNING");
    EXPECT_EQ(StateOf(*src_, "d0"), "STOP");
  } else {
    // ABANDON: the destination's device is reset and the session FAILED; the VM runs on the
    // source.
    EXPECT_EQ(settled.phase(), SessionStatus::FAILED) << settled.DebugString();
    EXPECT_EQ(StateOf(*src_, "d0"), "RUNNING");
  }
}

// A daemon that hangs (SIGSTOP) while its peer streams nothing (PRE_COPY, the device idle): its
// kernel acknowledges everything and the KEEPALIVEs fit in its buffers, so only the heartbeat
// tells. The other daemon notices within the peer timeout and abandons; once resumed, the hung
// one fails too and runs (source) or resets (destination).
TEST_F(FaultTest, TheSourceHungDuringIdlePreCopyIsNoticedByTheDestination) {
  AttachPair("d0", "size=8MiB");
  ASSERT_TRUE(Prepare("stop-src-pre", {"d0"}).ok());
  ASSERT_TRUE(Start("stop-src-pre", {"d0"}, /*precopy=*/true).ok());
  WatchUntilRounds("stop-src-pre", 1);
  const absl::Time stop = absl::Now();
  ASSERT_EQ(::kill(src_->pid(), SIGSTOP), 0);
  SessionStatus d = WaitFinal(*dst_, "stop-src-pre", 30);
  const absl::Duration noticed = absl::Now() - stop;
  ASSERT_EQ(::kill(src_->pid(), SIGCONT), 0);
  std::cout << "fault hang_source_idle_pre_copy: destination ended after "
            << absl::FormatDuration(noticed) << std::endl;
  RecordProperty("hang_source_idle_pre_copy_destination_ms",
                 static_cast<int>(absl::ToInt64Milliseconds(noticed)));
  EXPECT_EQ(d.phase(), SessionStatus::FAILED) << d.DebugString();
  EXPECT_THAT(d.error(), ::testing::HasSubstr("sent no PING"));
  EXPECT_EQ(StateOf(*dst_, "d0"), "RUNNING") << "reset";
  EXPECT_LE(noticed, absl::Milliseconds(kPeerTimeoutMs) + kDetectionSlack);
  SessionStatus s = WaitFinal(*src_, "stop-src-pre", 30);
  EXPECT_EQ(s.phase(), SessionStatus::FAILED) << s.DebugString();
  EXPECT_EQ(StateOf(*src_, "d0"), "RUNNING");
  ExpectANewMigrationSucceeds("after-stop-src-pre", "d0");
}

TEST_F(FaultTest, TheDestinationHungDuringIdlePreCopyIsNoticedByTheSource) {
  AttachPair("d0", "size=8MiB");
  ASSERT_TRUE(Prepare("stop-dst-pre", {"d0"}).ok());
  ASSERT_TRUE(Start("stop-dst-pre", {"d0"}, /*precopy=*/true).ok());
  WatchUntilRounds("stop-dst-pre", 1);
  const absl::Time stop = absl::Now();
  ASSERT_EQ(::kill(dst_->pid(), SIGSTOP), 0);
  SessionStatus s = WaitFinal(*src_, "stop-dst-pre", 30);
  const absl::Duration noticed = absl::Now() - stop;
  ASSERT_EQ(::kill(dst_->pid(), SIGCONT), 0);
  std::cout << "fault hang_destination_idle_pre_copy: source ended after "
            << absl::FormatDuration(noticed) << std::endl;
  RecordProperty("hang_destination_idle_pre_copy_source_ms",
                 static_cast<int>(absl::ToInt64Milliseconds(noticed)));
  EXPECT_EQ(s.phase(), SessionStatus::FAILED) << s.DebugString();
  EXPECT_THAT(s.error(), ::testing::HasSubstr("answered no PING"));
  EXPECT_EQ(StateOf(*src_, "d0"), "RUNNING");
  EXPECT_LE(noticed, absl::Milliseconds(kPeerTimeoutMs) + kDetectionSlack);
  SessionStatus d = WaitFinal(*dst_, "stop-dst-pre", 30);
  EXPECT_EQ(d.phase(), SessionStatus::FAILED) << d.DebugString();
  EXPECT_NE(StateOf(*dst_, "d0"), "RESUMING");
  ExpectANewMigrationSucceeds("after-stop-dst-pre", "d0");
}

// The destination hangs while loading its device (the source waits for its COMMIT, which
// before the heartbeat meant up to four idle timeouts with the VM paused).
TEST_F(FaultTest, TheDestinationHungWhileCommittingIsNoticedByTheSource) {
  ASSERT_TRUE(Attach(*src_, "d0", "size=8MiB").ok());
  ASSERT_TRUE(Attach(*dst_, "d0", "size=8MiB,commit_delay_ms=1000").ok());
  StartUntilDestinationCommits("stop-dst-commit");
  const absl::Time stop = absl::Now();
  ASSERT_EQ(::kill(dst_->pid(), SIGSTOP), 0);
  SessionStatus s = WaitFinal(*src_, "stop-dst-commit", 30);
  const absl::Duration noticed = absl::Now() - stop;
  ASSERT_EQ(::kill(dst_->pid(), SIGCONT), 0);
  std::cout << "fault hang_destination_committing: source ended after "
            << absl::FormatDuration(noticed) << std::endl;
  RecordProperty("hang_destination_committing_source_ms",
                 static_cast<int>(absl::ToInt64Milliseconds(noticed)));
  EXPECT_EQ(s.phase(), SessionStatus::FAILED) << s.DebugString();
  EXPECT_EQ(StateOf(*src_, "d0"), "RUNNING");
  EXPECT_LE(noticed, absl::Milliseconds(kPeerTimeoutMs) + kDetectionSlack);
  // Resumed, the destination finishes its load, counts its commit and answers; the source's
  // ERROR (or its silence) then decides: never RUNNING there with the source running.
  SessionStatus d = WaitFinal(*dst_, "stop-dst-commit", 30);
  EXPECT_NE(d.phase(), SessionStatus::SUCCEEDED) << d.DebugString();
  EXPECT_NE(StateOf(*dst_, "d0"), "RESUMING");
  if (d.phase() == SessionStatus::IN_DOUBT) {
    grpc::ClientContext ctx;
    v1::ResolveSessionRequest req;
    req.set_session_id("stop-dst-commit");
    req.set_outcome(v1::ResolveSessionRequest::ABANDON);
    SessionStatus settled;
    ASSERT_TRUE(dst_->stub()->ResolveSession(&ctx, req, &settled).ok());
  }
  ExpectANewMigrationSucceeds("after-stop-dst-commit", "d0");
}

TEST_F(FaultTest, FivePercentLossStillMovesEveryByteExactly) {
  AttachPair("d0", "size=32MiB,dirty_rate=8MiB");
  ASSERT_TRUE(net_->Loss(5).ok());
  ASSERT_TRUE(Prepare("lossy", {"d0"}).ok());
  ASSERT_TRUE(Start("lossy", {"d0"}, /*precopy=*/true).ok());
  WatchUntilRounds("lossy", 1);
  Ended e = SwitchoverAndWait("lossy", 120);
  EXPECT_TRUE(BothSucceeded(e.source, e.destination));
  ExpectOutcomeRule(e, "d0");
}

TEST_F(FaultTest, OnePercentLossStillMovesEveryByteExactly) {
  AttachPair("d0", "size=32MiB,dirty_rate=8MiB");
  ASSERT_TRUE(net_->Loss(1).ok());
  ASSERT_TRUE(Prepare("lossy1", {"d0"}).ok());
  ASSERT_TRUE(Start("lossy1", {"d0"}, /*precopy=*/true).ok());
  WatchUntilRounds("lossy1", 1);
  Ended e = SwitchoverAndWait("lossy1", 120);
  EXPECT_TRUE(BothSucceeded(e.source, e.destination));
  ExpectOutcomeRule(e, "d0");
}

// A link of 100 Mbit/s (tbf on both ends): the stream is slow, the queue at the bottleneck
// full, and neither the peer timeout nor the heartbeat mistakes that for a dead peer.
TEST_F(FaultTest, ABottleneckSlowsTheStreamButMovesEveryByteExactly) {
  AttachPair("d0", "size=32MiB");
  ASSERT_TRUE(net_->Bottleneck(100'000'000).ok());
  ASSERT_TRUE(Prepare("narrow", {"d0"}).ok());
  const absl::Time start = absl::Now();
  ASSERT_TRUE(Start("narrow", {"d0"}, /*precopy=*/false).ok());
  Ended e = SwitchoverAndWait("narrow", 120);
  const absl::Duration took = absl::Now() - start;
  EXPECT_TRUE(BothSucceeded(e.source, e.destination));
  ExpectOutcomeRule(e, "d0");
  const double mbit_s = 32.0 * 8 * 1.048576 / absl::ToDoubleSeconds(took);
  std::cout << "fault bottleneck_100mbit: 32 MiB in " << absl::FormatDuration(took) << " ("
            << mbit_s << " Mbit/s)" << std::endl;
  // The bottleneck was real: 32 MiB take 2.7 s at 100 Mbit/s.
  EXPECT_GT(took, absl::Milliseconds(2500));
}

// A long link: a relay in the destination's namespace holds every byte 25 ms each way (this
// kernel has no netem). PRE_COPY rounds, the switchover and the commit all cross it, heartbeat
// included, and the stream arrives whole.
TEST_F(FaultTest, ALongLinkDelaysEveryByteButMovesThemExactly) {
  AttachPair("d0", "size=16MiB,dirty_rate=4MiB");
  const std::string dst_address = dst_->peer_address();
  const uint16_t port =
      static_cast<uint16_t>(std::stoi(dst_address.substr(dst_address.rfind(':') + 1)));
  auto line = DelayLine::Start(net_->b(), NetnsPair::kAddressB, port, absl::Milliseconds(25));
  ASSERT_TRUE(line.ok()) << line.status();
  ASSERT_TRUE(Prepare("far", {"d0"}).ok());
  ASSERT_TRUE(Start("far", {"d0"}, /*precopy=*/true, "", "", (*line)->address()).ok());
  WatchUntilRounds("far", 1);
  Ended e = SwitchoverAndWait("far", 120);
  EXPECT_TRUE(BothSucceeded(e.source, e.destination));
  ExpectOutcomeRule(e, "d0");
  std::cout << "fault delay_25ms_each_way: " << e.source.bytes_moved() << " bytes, STOP_COPY "
            << e.source.stop_copy_seconds() * 1e3 << " ms" << std::endl;
  // The delay was real: the commit alone takes a round trip.
  EXPECT_GE(e.source.stop_copy_seconds(), 0.05);
}

// The destination device stops taking data mid STOP_COPY (for 20 s): the destination's writes
// wait, its receive window shuts, and the source, whose sends make no progress, fails within
// twice the peer timeout (zero-window probes back off) and runs its VM again; the destination,
// whose stream makes no progress, fails too and resets its device: no progress is a failure on
// both sides, though both daemons stay alive (their heartbeat keeps beating).
TEST_F(FaultTest, AStalledDestinationDeviceFailsTheMigrationOnBothSides) {
  ASSERT_TRUE(Attach(*src_, "d0", "size=64MiB").ok());
  ASSERT_TRUE(Attach(*dst_, "d0", "size=64MiB,stall=8MiB:20000").ok());
  ASSERT_TRUE(Prepare("stall", {"d0"}).ok());
  ASSERT_TRUE(Start("stall", {"d0"}, /*precopy=*/false).ok());
  const absl::Time start = absl::Now();
  ASSERT_TRUE(Switchover("stall").ok());
  Outcome o = AwaitBoth("stall", start);
  std::cout << "fault stalled_destination_device: source ended after "
            << absl::FormatDuration(o.source) << ", destination after "
            << absl::FormatDuration(o.destination) << std::endl;
  EXPECT_EQ(o.ended.source.phase(), SessionStatus::FAILED) << o.ended.source.DebugString();
  EXPECT_EQ(o.ended.destination.phase(), SessionStatus::FAILED)
      << o.ended.destination.DebugString();
  ExpectOutcomeRule(o.ended, "d0");
  EXPECT_EQ(StateOf(*src_, "d0"), "RUNNING");
  // Well before the stall ends: the stall, not its end, failed the migration.
  EXPECT_LE(o.source, absl::Milliseconds(2 * kPeerTimeoutMs) + kDetectionSlack);
  EXPECT_LT(o.destination, absl::Seconds(15));
}

}  // namespace
}  // namespace migmover::testing
