#include "transport/stream/data_path_probe.h"

#include <fcntl.h>
#include <sys/eventfd.h>

#include "gtest/gtest.h"
#include "transport/base/unique_fd.h"

namespace migmover::stream {
namespace {

TEST(DataPathProbeTest, MeasuresBothPathsAndChoosesByTheMargin) {
  auto p = ProbeDataPaths(8 << 20, 1, 1 << 20);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_GT(p->copy_bytes_per_second, 0);
  EXPECT_GT(p->splice_bytes_per_second, 0);
  EXPECT_NEAR(p->splice_advantage, p->splice_bytes_per_second / p->copy_bytes_per_second - 1,
              1e-9);
  EXPECT_EQ(p->faster, ChooseDataPath(p->copy_bytes_per_second, p->splice_bytes_per_second));
}

// Noise does not flip the choice: splice is taken only when it is clearly faster, so two starts
// that measure 1.00 vs 1.05 and 1.05 vs 1.00 both copy.
TEST(DataPathProbeTest, SpliceOnlyByAClearMargin) {
  EXPECT_EQ(ChooseDataPath(1.00e9, 1.05e9), DataPath::kCopy);
  EXPECT_EQ(ChooseDataPath(1.05e9, 1.00e9), DataPath::kCopy);
  EXPECT_EQ(ChooseDataPath(1.00e9, 1.09e9), DataPath::kCopy);
  EXPECT_EQ(ChooseDataPath(1.00e9, 1.10e9), DataPath::kSplice);
  EXPECT_EQ(ChooseDataPath(1.00e9, 1.50e9), DataPath::kSplice);
  EXPECT_EQ(ChooseDataPath(2.00e9, 1.00e9), DataPath::kCopy);
  EXPECT_EQ(ChooseDataPath(0, 0), DataPath::kCopy);
  EXPECT_EQ(ChooseDataPath(1.00e9, 1.05e9, 0.01), DataPath::kSplice);
}

TEST(DataPathProbeTest, AutoFollowsTheMeasurementOnlyWhereSpliceIsPossible) {
  auto pipe = MakePipe();
  ASSERT_TRUE(pipe.ok());
  EXPECT_EQ(ResolveDataPath(DataPath::kAuto, pipe->read.get(), DataPath::kCopy), DataPath::kCopy);
  EXPECT_EQ(ResolveDataPath(DataPath::kAuto, pipe->read.get(), DataPath::kSplice),
            DataPath::kSplice);
  EXPECT_EQ(ResolveDataPath(DataPath::kSplice, pipe->read.get(), DataPath::kCopy),
            DataPath::kSplice);
  // An anonymous-inode fd (as VFIO data fds are) cannot splice: always copy.
  UniqueFd anon(::eventfd(0, 0));
  EXPECT_EQ(ResolveDataPath(DataPath::kAuto, anon.get(), DataPath::kSplice), DataPath::kCopy);
}

}  // namespace
}  // namespace migmover::stream
