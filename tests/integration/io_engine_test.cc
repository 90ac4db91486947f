// migmoverd where io_uring is refused (a seccomp filter in the launcher, as container profiles
// do): --io_engine=auto falls back to plain syscalls and says why at start-up; --io_engine=uring
// refuses to start and says what to do. That migrations then work is shown by the whole
// two-daemon suite rerun under the same filter (two_daemon_migration_test_no_io_uring).
#include <string>

#include "daemon/testing/daemon_process.h"
#include "daemon/testing/forbid_io_uring.h"
#include "gtest/gtest.h"

namespace migmover::testing {
namespace {

TEST(IoEngineTest, AutoFallsBackToSyscallsWhenIoUringIsRefusedAndSaysWhy) {
  auto d = DaemonProcess::Start(MigmoverdPath(), "no-uring", {"--io_engine=auto"},
                                LaunchOptions{.forbid_io_uring = true});
  ASSERT_TRUE(d.ok()) << d.status();
  const std::string log = (*d)->Log();
  EXPECT_NE(log.find("io engine: syscalls, because io_uring is refused here "
                     "(io_uring_queue_init(2): EPERM"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("io engine syscalls"), std::string::npos) << log;
}

TEST(IoEngineTest, AskingForIoUringWhereItIsRefusedFailsAtStartWithWhatToDo) {
  auto d = DaemonProcess::Start(MigmoverdPath(), "uring-only", {"--io_engine=uring"},
                                LaunchOptions{.forbid_io_uring = true});
  ASSERT_FALSE(d.ok());
  const std::string why(d.status().message());
  EXPECT_NE(why.find("exited at start"), std::string::npos) << why;
  EXPECT_NE(why.find("--io_engine=uring, but this process may not use io_uring"),
            std::string::npos)
      << why;
  EXPECT_NE(why.find("--io_engine=syscalls"), std::string::npos) << why;
}

TEST(IoEngineTest, AutoUsesIoUringWhereItIsAllowed) {
  auto d = DaemonProcess::Start(MigmoverdPath(), "uring", {"--io_engine=auto"},
                                LaunchOptions{.forbid_io_uring = false});
  ASSERT_TRUE(d.ok()) << d.status();
  const std::string log = (*d)->Log();
  if (log.find("io_uring is refused") != std::string::npos) {
    GTEST_SKIP() << "this machine refuses io_uring to every process: " << log;
  }
  EXPECT_NE(log.find("io engine: uring (auto)"), std::string::npos) << log;
}

TEST(IoEngineTest, AnUnknownEngineIsRefusedAtStart) {
  auto d = DaemonProcess::Start(MigmoverdPath(), "bad", {"--io_engine=epoll"});
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("expected auto, uring or syscalls"), std::string::npos)
      << d.status();
}

}  // namespace
}  // namespace migmover::testing
