// Resumable device streams between two real daemons in their own network namespaces
// (api/PEER_PROTOCOL.md, "Resume"): silent drops of 1, 3 and 8 s in PRE_COPY and in STOP_COPY,
// a striped stream, a reset, a flapping link, a drop while the destination commits, a drop longer
// than the window, and a destination daemon that lost its state. Inside the window every byte
// lands once (the destination's simulated device checks each, the keyed digest the whole) and
// both daemons report the reconnections and the time lost; outside it, the outcome rule.
//
// The peer timeout is 3 s (fault_fixture.h): a drop shorter than that may be bridged by TCP's
// own retransmissions with nothing to resume; a longer one cuts the connections
// (TCP_USER_TIMEOUT) and the heartbeat, and the streams resume once the link is back.
#include <csignal>
#include <iostream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/faults/fault_fixture.h"

namespace migmover::testing {
namespace {

constexpr int kWindowMs = 8000;

class ResumeTest : public FaultTest {
 protected:
  void SetUp() override {
    reconnect_window_ms_ = kWindowMs;
    FaultTest::SetUp();
  }

  // The link drops every packet (or resets every segment) for `length`, then carries again.
  // The sleep is the fault's own length, not a wait for an event.
  void Blip(absl::Duration length, bool reset = false) {
    ASSERT_TRUE((reset ? net_->Reset() : net_->Drop()).ok());
    absl::SleepFor(length);
    ASSERT_TRUE(net_->Clear().ok());
  }

  // Both sides succeeded, the destination verified every byte, and what the resumes cost is
  // printed (and recorded in the test's XML) under `what`.
  void ExpectResumedByteExact(const Ended& e, const std::string& what) {
    EXPECT_TRUE(BothSucceeded(e.source, e.destination))
        << e.source.DebugString() << e.destination.DebugString();
    EXPECT_EQ(StateOf(*dst_, "d0"), "RUNNING");
    EXPECT_EQ(StateOf(*src_, "d0"), "STOP");
    std::cout << "resume " << what << ": source " << e.source.reconnections()
              << " reconnection(s), " << e.source.time_lost_seconds() << " s lost, "
              << e.source.replayed_bytes() << " bytes replayed; destination "
              << e.destination.reconnections() << " reconnection(s), "
              << e.destination.time_lost_seconds() << " s lost" << std::endl;
    RecordProperty(what + "_source_reconnections", static_cast<int>(e.source.reconnections()));
    RecordProperty(what + "_source_lost_ms",
                   static_cast<int>(e.source.time_lost_seconds() * 1000));
    RecordProperty(what + "_destination_lost_ms",
                   static_cast<int>(e.destination.time_lost_seconds() * 1000));
    RecordProperty(what + "_replayed_bytes", static_cast<int>(e.source.replayed_bytes()));
  }

  // A PRE_COPY that lasts seconds (a 64 MiB device at 16 MiB/s); returns once some of it moved.
  void StartLongPreCopy(const std::string& id) {
    AttachPair("d0", "size=64MiB");
    bandwidth_ = 16 << 20;
    ASSERT_TRUE(Prepare(id, {"d0"}).ok());
    ASSERT_TRUE(Start(id, {"d0"}, /*precopy=*/true).ok());
    SessionStatus st = WatchUntil(*src_, id, [](const SessionStatus& s) {
      return s.phase() == SessionStatus::PRE_COPY && s.precopy_bytes() >= (8u << 20);
    }, 20);
    ASSERT_EQ(st.phase(), SessionStatus::PRE_COPY) << st.DebugString();
    bandwidth_ = 0;
  }

  // Once every initial byte is across: the switchover, and both ends' outcome.
  Ended SwitchoverWhenReady(const std::string& id) {
    SessionStatus st =
        WatchUntil(*src_, id, [](const SessionStatus& s) { return s.switchover_ready(); }, 60);
    EXPECT_TRUE(st.switchover_ready()) << st.DebugString();
    return SwitchoverAndWait(id);
  }
};

class ResumeAfterDrop : public ResumeTest, public ::testing::WithParamInterface<int> {};

TEST_P(ResumeAfterDrop, InPreCopyTheStreamGoesOnAndEveryByteLandsOnce) {
  const int seconds = GetParam();
  const std::string id = absl::StrCat("drop-pre-", seconds);
  StartLongPreCopy(id);
  Blip(absl::Seconds(seconds));
  Ended e = SwitchoverWhenReady(id);
  ExpectResumedByteExact(e, absl::StrCat("drop_", seconds, "s_pre_copy"));
  if (seconds > kPeerTimeoutMs / 1000) {
    // Longer than the peer timeout: the connections were cut and the stream resumed.
    EXPECT_GE(e.source.reconnections(), 1u) << e.source.DebugString();
    EXPECT_GE(e.destination.reconnections(), 1u) << e.destination.DebugString();
    EXPECT_GT(e.source.time_lost_seconds(), 0);
  }
}

TEST_P(ResumeAfterDrop, InStopCopyItCostsTheDropNotTheMigration) {
  const int seconds = GetParam();
  const std::string id = absl::StrCat("drop-stop-", seconds);
  StartLongStopCopy(id);  // About 8 s of STOP_COPY: the drop lands inside it.
  Blip(absl::Seconds(seconds));
  Ended e{WaitFinal(*src_, id, 60), WaitFinal(*dst_, id, 60)};
  ExpectResumedByteExact(e, absl::StrCat("drop_", seconds, "s_stop_copy"));
  if (seconds > kPeerTimeoutMs / 1000) {
    EXPECT_GE(e.source.reconnections(), 1u) << e.source.DebugString();
    EXPECT_GE(e.destination.reconnections(), 1u) << e.destination.DebugString();
  }
}

INSTANTIATE_TEST_SUITE_P(Seconds, ResumeAfterDrop, ::testing::Values(1, 3, 8),
                         [](const auto& info) { return absl::StrCat(info.param, "s"); });

// A stream striped over two connections resumes both: every stripe connects again under the
// same resume, and the frames sent again are put back in order at the destination.
TEST_F(ResumeTest, AStripedStreamResumesEveryStripe) {
  AttachPair("d0", "size=128MiB");
  bandwidth_ = 16 << 20;
  ASSERT_TRUE(Prepare("stripes", {"d0"}).ok());
  ASSERT_TRUE(Start("stripes", {"d0"}, /*precopy=*/false, "", "", "", /*streams=*/2).ok());
  bandwidth_ = 0;
  ASSERT_TRUE(Switchover("stripes").ok());
  SessionStatus st = WatchUntil(*src_, "stripes", [](const SessionStatus& s) {
    return s.phase() == SessionStatus::STOP_COPY && s.stop_copy_bytes() > 0;
  }, 20);
  ASSERT_EQ(st.phase(), SessionStatus::STOP_COPY) << st.DebugString();
  ASSERT_EQ(st.devices(0).transport(), "tcp x 2") << st.DebugString();
  Blip(absl::Seconds(5));
  Ended e{WaitFinal(*src_, "stripes", 60), WaitFinal(*dst_, "stripes", 60)};
  ExpectResumedByteExact(e, "drop_5s_stop_copy_2_stripes");
  EXPECT_GE(e.source.reconnections(), 1u) << e.source.DebugString();
  EXPECT_GE(e.destination.reconnections(), 1u) << e.destination.DebugString();
}

TEST_F(ResumeTest, AResetConnectionIsResumed) {
  StartLongStopCopy("reset-stop");
  // Each segment is answered with a reset, and so are the first reconnects. Longer than the
  // peer timeout: a reset the receiver does not take (Linux wants its exact next sequence
  // number, else it only answers with a challenge ACK, which the rule resets too) leaves the
  // link as dead as a drop, which the timeout then ends.
  Blip(absl::Seconds(4), /*reset=*/true);
  Ended e{WaitFinal(*src_, "reset-stop", 60), WaitFinal(*dst_, "reset-stop", 60)};
  ExpectResumedByteExact(e, "reset_stop_copy");
  EXPECT_GE(e.source.reconnections(), 1u) << e.source.DebugString();
}

// Three drops of 5 s, each past the peer timeout (the connections cannot outlive one), with the
// link up for about a second in between (until 16 MiB more moved at 16 MiB/s).
TEST_F(ResumeTest, AFlappingLinkIsResumedEachTime) {
  StartLongStopCopy("flap");
  for (int i = 0; i < 3; ++i) {
    const uint64_t before = Get(*src_, "flap").stop_copy_bytes();
    Blip(absl::Seconds(5));
    // Up again until the stream moves again, before the next drop.
    SessionStatus st = WatchUntil(*src_, "flap", [before](const SessionStatus& s) {
      return s.stop_copy_bytes() >= before + (16u << 20);
    }, 20);
    ASSERT_EQ(st.phase(), SessionStatus::STOP_COPY) << st.DebugString();
  }
  Ended e{WaitFinal(*src_, "flap", 90), WaitFinal(*dst_, "flap", 90)};
  ExpectResumedByteExact(e, "flapping_3x5s_stop_copy");
  EXPECT_GE(e.source.reconnections(), 3u) << e.source.DebugString();
  EXPECT_GE(e.destination.reconnections(), 3u) << e.destination.DebugString();
}

// The stream is in and the destination loads its device (4 s) when the link drops for longer
// than the peer timeout. Nothing is resumed after END_STREAM: the verdict either crosses once
// the link is back, or the commit protocol's rule holds (the source runs again; a destination
// that counted its commit waits IN_DOUBT for its agent). Never on both hosts.
TEST_F(ResumeTest, ADropWhileTheDestinationCommitsKeepsTheOutcomeRule) {
  ASSERT_TRUE(Attach(*src_, "d0", "size=8MiB").ok());
  ASSERT_TRUE(Attach(*dst_, "d0", "size=8MiB,commit_delay_ms=4000").ok());
  StartUntilDestinationCommits("drop-commit");
  Blip(absl::Seconds(4));
  Ended e{WaitFinal(*src_, "drop-commit", 60), WaitFinal(*dst_, "drop-commit", 60)};
  std::cout << "resume drop_4s_while_committing: source "
            << SessionStatus::Phase_Name(e.source.phase()) << ", destination "
            << SessionStatus::Phase_Name(e.destination.phase()) << std::endl;
  ExpectOutcomeRule(e, "d0");
  SessionStatus settled = Settle("drop-commit", e.source, e.destination);
  if (e.source.phase() == SessionStatus::SUCCEEDED) {
    EXPECT_EQ(settled.phase(), SessionStatus::SUCCEEDED) << settled.DebugString();
    EXPECT_EQ(StateOf(*dst_, "d0"), "RUNNING");
  } else {
    // The VM runs on the source; the destination's device was reset (a reset device reports
    // RUNNING, with none of the VM's state in it).
    EXPECT_NE(settled.phase(), SessionStatus::SUCCEEDED) << "running on both hosts: "
                                                          << settled.DebugString();
    EXPECT_EQ(StateOf(*src_, "d0"), "RUNNING");
  }
}

// The destination daemon dies and comes back empty: its state is gone, so the source's resumes
// find nothing to resume (or nobody at the old port) and the source runs its VM again once the
// window is out. The new daemon never took anything into its device.
TEST_F(ResumeTest, ADestinationThatLostItsStateLeavesTheSourceRunning) {
  StartLongStopCopy("lost-state");
  const absl::Time kill = absl::Now();
  ASSERT_EQ(::kill(dst_->pid(), SIGKILL), 0);
  Restart(dst_, "dst2", dst_flags_, dst_launch_);
  ASSERT_TRUE(Attach(*dst_, "d0", "size=128MiB").ok());
  SessionStatus s = WaitFinal(*src_, "lost-state", 60);
  const absl::Duration noticed = absl::Now() - kill;
  std::cout << "resume destination_lost_state: source ended after "
            << absl::FormatDuration(noticed) << ": " << s.error() << std::endl;
  EXPECT_EQ(s.phase(), SessionStatus::FAILED) << s.DebugString();
  EXPECT_EQ(StateOf(*src_, "d0"), "RUNNING");
  EXPECT_EQ(StateOf(*dst_, "d0"), "RUNNING") << "the new daemon's device was never touched";
  EXPECT_LE(noticed, absl::Milliseconds(kPeerTimeoutMs + kWindowMs) + kDetectionSlack);
  ExpectANewMigrationSucceeds("after-lost-state", "d0");
}

// STOP_COPY downtime (the source's stop_copy_seconds: switchover to the commit acknowledged)
// of the same 32 MiB migration at 16 MiB/s, without and with a 1 s drop in its middle; printed
// as the figure the issue asks for. A drop this short is bridged by TCP's retransmissions (no
// reconnect is needed within the 3 s peer timeout): it costs its length and the retransmission
// backoff, not the migration.
TEST_F(ResumeTest, StopCopyDowntimeWithAOneSecondDropAgainstWithout) {
  double downtime[2] = {0, 0};
  for (int blip = 0; blip < 2; ++blip) {
    const std::string id = absl::StrCat("downtime-", blip);
    const std::string device = absl::StrCat("d", blip);
    AttachPair(device, "size=32MiB");
    bandwidth_ = 16 << 20;
    ASSERT_TRUE(Prepare(id, {device}).ok());
    ASSERT_TRUE(Start(id, {device}, /*precopy=*/false).ok());
    bandwidth_ = 0;
    ASSERT_TRUE(Switchover(id).ok());
    if (blip == 1) {
      SessionStatus st = WatchUntil(*src_, id, [](const SessionStatus& s) {
        return s.phase() == SessionStatus::STOP_COPY && s.stop_copy_bytes() >= (8u << 20);
      }, 20);
      ASSERT_EQ(st.phase(), SessionStatus::STOP_COPY) << st.DebugString();
      Blip(absl::Seconds(1));
    }
    Ended e{WaitFinal(*src_, id, 60), WaitFinal(*dst_, id, 60)};
    ASSERT_TRUE(BothSucceeded(e.source, e.destination)) << e.source.DebugString();
    downtime[blip] = e.source.stop_copy_seconds();
  }
  std::cout << "resume stop_copy_downtime: without a drop " << downtime[0] << " s, with a 1 s drop "
            << downtime[1] << " s (" << downtime[1] - downtime[0] << " s more)" << std::endl;
  RecordProperty("downtime_without_ms", static_cast<int>(downtime[0] * 1000));
  RecordProperty("downtime_with_1s_drop_ms", static_cast<int>(downtime[1] * 1000));
  EXPECT_GT(downtime[1], downtime[0]);
}

// A window shorter than the drop: the migration fails on both sides with the outcome rule,
// within the peer timeout plus the window.
class ShortWindowResumeTest : public FaultTest {
 protected:
  static constexpr int kShortWindowMs = 2000;
  void SetUp() override {
    reconnect_window_ms_ = kShortWindowMs;
    FaultTest::SetUp();
  }
};

TEST_F(ShortWindowResumeTest, ADropLongerThanTheWindowFailsWithTheOutcomeRule) {
  AttachPair("d0", "size=64MiB");
  bandwidth_ = 16 << 20;
  ASSERT_TRUE(Prepare("outside", {"d0"}).ok());
  ASSERT_TRUE(Start("outside", {"d0"}, /*precopy=*/true).ok());
  WatchUntilRounds("outside", 1);
  const absl::Time cut = absl::Now();
  ASSERT_TRUE(net_->Drop().ok());
  Outcome o = AwaitBoth("outside", cut);
  std::cout << "resume drop_outside_window: source ended after "
            << absl::FormatDuration(o.source) << ", destination after "
            << absl::FormatDuration(o.destination) << std::endl;
  EXPECT_EQ(o.ended.source.phase(), SessionStatus::FAILED) << o.ended.source.DebugString();
  EXPECT_EQ(o.ended.destination.phase(), SessionStatus::FAILED)
      << o.ended.destination.DebugString();
  ExpectOutcomeRule(o.ended, "d0");
  EXPECT_EQ(StateOf(*dst_, "d0"), "RUNNING") << "reset";
  const absl::Duration bound =
      absl::Milliseconds(kPeerTimeoutMs + kShortWindowMs) + kDetectionSlack + absl::Seconds(2);
  EXPECT_LE(o.source, bound);
  EXPECT_LE(o.destination, bound);
  bandwidth_ = 0;
  ExpectANewMigrationSucceeds("after-outside", "d0");
}

}  // namespace
}  // namespace migmover::testing
