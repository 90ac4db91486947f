#include "daemon/cli/fsm_path_command.h"

#include <sstream>

#include "absl/strings/str_split.h"
#include "gtest/gtest.h"

namespace migmover {
namespace {

TEST(FsmPathCommandTest, PrintsWalk) {
  std::ostringstream out, err;
  EXPECT_EQ(RunFsmPathCommand("stop_copy,p2p,pre_copy", false, {"RUNNING", "STOP_COPY"}, out, err),
            0);
  EXPECT_EQ(out.str(), "RUNNING > RUNNING_P2P > STOP > STOP_COPY\n");
}

TEST(FsmPathCommandTest, InvalidRequestNamesErrno) {
  std::ostringstream out, err;
  EXPECT_EQ(RunFsmPathCommand("stop_copy,p2p,pre_copy", false, {"STOP_COPY", "PRE_COPY"}, out, err),
            1);
  EXPECT_EQ(out.str(), "");
  EXPECT_EQ(err.str().rfind("EINVAL", 0), 0u) << err.str();
}

TEST(FsmPathCommandTest, UsageErrors) {
  std::ostringstream out, err;
  EXPECT_EQ(RunFsmPathCommand("p2p", false, {"RUNNING", "STOP"}, out, err), 2);
  EXPECT_EQ(RunFsmPathCommand("stop_copy", false, {"RUNNING"}, out, err), 2);
  EXPECT_EQ(RunFsmPathCommand("stop_copy", false, {"RUNNING", "WARP"}, out, err), 2);
  EXPECT_EQ(RunFsmPathCommand("stop_copy", true, {"RUNNING"}, out, err), 2);
}

TEST(FsmPathCommandTest, AllPrintsEveryPairTabSeparated) {
  std::ostringstream out, err;
  ASSERT_EQ(RunFsmPathCommand("stop_copy,p2p", true, {}, out, err), 0);
  std::vector<std::string> lines = absl::StrSplit(out.str(), '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 64u);
  int noops = 0, einval = 0;
  for (const auto& line : lines) {
    std::vector<std::string> cols = absl::StrSplit(line, '\t');
    ASSERT_EQ(cols.size(), 3u) << line;
    if (cols[2] == "EINVAL") ++einval;
    if (cols[0] == cols[2]) ++noops;
  }
  // STOP, RUNNING, STOP_COPY, RESUMING, RUNNING_P2P exist: 5 no-ops, 25 valid pairs.
  EXPECT_EQ(noops, 5);
  EXPECT_EQ(einval, 64 - 25);
  EXPECT_NE(out.str().find("RUNNING\tSTOP\tRUNNING>RUNNING_P2P>STOP\n"), std::string::npos);
}

}  // namespace
}  // namespace migmover
