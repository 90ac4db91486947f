#include "transport/stream/data_path_probe.h"

#include <fcntl.h>
#include <sys/eventfd.h>

#include "gtest/gtest.h"
#include "transport/base/unique_fd.h"

namespace migmover::stream {
namespace {

TEST(DataPathProbeTest, MeasuresBothPathsAndPicksTheFaster) {
  auto p = ProbeDataPaths(8 << 20, 1, 1 << 20);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_GT(p->copy_bytes_per_second, 0);
  EXPECT_GT(p->splice_bytes_per_second, 0);
  EXPECT_EQ(p->faster, p->copy_bytes_per_second > p->splice_bytes_per_second ? DataPath::kCopy
                                                                             : DataPath::kSplice);
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
