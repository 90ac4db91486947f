#include "transport/stream/data_path.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gtest/gtest.h"

namespace migmover::stream {
namespace {

// A blocking socket can splice, but a splice from an empty one or into a full one blocks the
// engine's thread (TCP ignores SPLICE_F_NONBLOCK): auto copies such a data fd; a nonblocking
// socket, a pipe or a file splices.
TEST(DataPathTest, OnlyNonblockingSocketsSplice) {
  int s[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s), 0);
  EXPECT_FALSE(FdSupportsSplice(s[0]));
  EXPECT_EQ(ResolveDataPath(DataPath::kAuto, s[0]), DataPath::kCopy);
  ASSERT_EQ(::fcntl(s[1], F_SETFL, O_NONBLOCK), 0);
  EXPECT_TRUE(FdSupportsSplice(s[1]));
  EXPECT_EQ(ResolveDataPath(DataPath::kAuto, s[1]), DataPath::kSplice);
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  EXPECT_TRUE(FdSupportsSplice(p[0]));
  for (int fd : {s[0], s[1], p[0], p[1]}) ::close(fd);
}

TEST(DataPathTest, NamesParseBack) {
  for (DataPath d : {DataPath::kAuto, DataPath::kSplice, DataPath::kCopy}) {
    absl::StatusOr<DataPath> back = ParseDataPath(DataPathName(d));
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, d);
  }
  EXPECT_FALSE(ParseDataPath("zerocopy").ok());
}

}  // namespace
}  // namespace migmover::stream
