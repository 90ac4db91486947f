// Device faults between two real daemons in their own network namespaces (two devices per
// migration): an arc that fails on either side at each point where the daemons take one, and a
// stream the destination device refuses. Each case checks the outcome rule as both daemons
// report it, that the agent hears which device and which arc failed, and that the healthy device
// then migrates again (the faulty one fails by design every time).
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/faults/fault_fixture.h"

namespace migmover::testing {
namespace {

using ::testing::HasSubstr;

class DeviceFaultTest : public FaultTest {
 protected:
  // d0 and d1 on both sides; `src_extra` / `dst_extra` appended to d0's spec there.
  void AttachDevices(const std::string& src_extra, const std::string& dst_extra) {
    ASSERT_TRUE(Attach(*src_, "d0", "size=8MiB" + src_extra).ok());
    ASSERT_TRUE(Attach(*dst_, "d0", "size=8MiB" + dst_extra).ok());
    ASSERT_TRUE(Attach(*src_, "d1", "size=8MiB").ok());
    ASSERT_TRUE(Attach(*dst_, "d1", "size=8MiB").ok());
  }

  Ended Migrate(const std::string& id) {
    EXPECT_TRUE(Prepare(id, {"d0", "d1"}).ok());
    EXPECT_TRUE(Start(id, {"d0", "d1"}, /*precopy=*/true).ok());
    WatchUntilRounds(id, 1);
    Ended e;
    e.source = WaitFinalAfterSwitchover(id);
    e.destination = WaitFinal(*dst_, id, 30);
    return e;
  }

  SessionStatus WaitFinalAfterSwitchover(const std::string& id) {
    SessionStatus s = Get(*src_, id);
    if (!Final(s)) (void)Switchover(id);
    return WaitFinal(*src_, id, 30);
  }

  // Both devices RUNNING again on the source, neither left RESUMING on the destination, the
  // destination not running what the source still runs.
  void ExpectAbandoned(const Ended& e) {
    EXPECT_EQ(e.source.phase(), SessionStatus::FAILED) << e.source.DebugString();
    EXPECT_EQ(e.destination.phase(), SessionStatus::FAILED) << e.destination.DebugString();
    for (const char* dev : {"d0", "d1"}) {
      EXPECT_EQ(StateOf(*src_, dev), "RUNNING") << dev;
      EXPECT_NE(StateOf(*dst_, dev), "RESUMING") << dev;
    }
  }

  // The healthy device migrates again.
  void ExpectD1MigratesAgain() {
    ASSERT_TRUE(Prepare("again", {"d1"}).ok());
    ASSERT_TRUE(Start("again", {"d1"}, /*precopy=*/true).ok());
    Ended e = SwitchoverAndWait("again");
    EXPECT_TRUE(BothSucceeded(e.source, e.destination));
    EXPECT_EQ(StateOf(*dst_, "d1"), "RUNNING");
  }
};

// At switchover the source quiesces every device first; one refuses (PRE_COPY -> PRE_COPY_P2P):
// nothing has stopped yet, the migration is abandoned and both devices run on.
TEST_F(DeviceFaultTest, ASourceDeviceThatCannotQuiesceAbandonsTheMigration) {
  AttachDevices(",fail_arc=PRE_COPY:PRE_COPY_P2P", "");
  Ended e = Migrate("quiesce");
  ExpectAbandoned(e);
  EXPECT_THAT(e.source.error(), HasSubstr("PRE_COPY->PRE_COPY_P2P"));
  ExpectD1MigratesAgain();
}

// The source device fails entering STOP_COPY (after every device quiesced): abandoned, both
// devices back through RUNNING_P2P to RUNNING.
TEST_F(DeviceFaultTest, ASourceDeviceThatCannotEnterStopCopyAbandonsTheMigration) {
  AttachDevices(",fail_arc=PRE_COPY_P2P:STOP_COPY", "");
  Ended e = Migrate("stop-copy");
  ExpectAbandoned(e);
  EXPECT_THAT(e.source.error(), HasSubstr("STOP_COPY"));
  ExpectD1MigratesAgain();
}

// The destination device cannot load the stream (RESUMING -> STOP fails): its COMMIT carries the
// error, the source abandons and runs, the destination resets both devices.
TEST_F(DeviceFaultTest, ADestinationDeviceThatCannotLoadFailsTheMigration) {
  AttachDevices("", ",fail_arc=RESUMING:STOP");
  Ended e = Migrate("load");
  ExpectAbandoned(e);
  EXPECT_THAT(e.destination.error(), HasSubstr("RESUMING->STOP"));
  EXPECT_THAT(e.source.error(), HasSubstr("RESUMING->STOP"));
  ExpectD1MigratesAgain();
}

// The stream is corrupted before it reaches the wire (the source device's own bytes): the
// destination refuses it, before or at the load, and nothing runs there.
TEST_F(DeviceFaultTest, AStreamTheDestinationDeviceRefusesFailsTheMigration) {
  AttachDevices(",corrupt_at=1048576", "");
  Ended e = Migrate("refused");
  ExpectAbandoned(e);
  EXPECT_FALSE(e.destination.error().empty());
  ExpectD1MigratesAgain();
}

// After the source's point of no return a device arc fails on either side: the decision stands
// (never two live copies), and the failure is reported where it happened.
TEST_F(DeviceFaultTest, ASourceArcFailingAfterTheDecisionIsReportedAndTheMigrationCompletes) {
  AttachDevices(",fail_arc=STOP_COPY:STOP", "");
  Ended e = Migrate("late-src");
  EXPECT_EQ(e.source.phase(), SessionStatus::SUCCEEDED) << e.source.DebugString();
  EXPECT_EQ(e.destination.phase(), SessionStatus::SUCCEEDED) << e.destination.DebugString();
  EXPECT_EQ(StateOf(*src_, "d0"), "STOP_COPY") << "stopped, never resumed";
  EXPECT_EQ(StateOf(*dst_, "d0"), "RUNNING");
  EXPECT_TRUE(absl::StrContains(src_->Log(), "STOP_COPY -> STOP failed here")) << src_->Log();
}

TEST_F(DeviceFaultTest, ADestinationArcFailingAfterConfirmFailsThereAndNothingResumes) {
  AttachDevices("", ",fail_arc=STOP:RUNNING_P2P");
  Ended e = Migrate("late-dst");
  EXPECT_EQ(e.source.phase(), SessionStatus::SUCCEEDED) << e.source.DebugString();
  EXPECT_EQ(e.destination.phase(), SessionStatus::FAILED) << e.destination.DebugString();
  EXPECT_THAT(e.destination.error(), HasSubstr("after the source confirmed"));
  EXPECT_EQ(StateOf(*src_, "d0"), "STOP") << "past its point of no return";
  EXPECT_NE(StateOf(*dst_, "d0"), "RUNNING");
  EXPECT_EQ(StateOf(*dst_, "d1"), "RUNNING") << "the healthy device runs where the VM went";
}

}  // namespace
}  // namespace migmover::testing
