// migmoverd under systemd's notify protocol, with a real datagram socket standing for systemd:
// READY=1 once it serves, WATCHDOG=1 at least every half of WATCHDOG_USEC, STOPPING=1 on
// SIGTERM.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "daemon/testing/daemon_process.h"
#include "gtest/gtest.h"
#include "transport/base/unique_fd.h"

namespace migmover {
namespace {

using testing::DaemonProcess;

// The next datagram on `fd` within `timeout`, or "" if none came.
std::string Next(int fd, absl::Duration timeout) {
  timeval tv{};
  tv.tv_sec = absl::ToInt64Seconds(timeout);
  tv.tv_usec = absl::ToInt64Microseconds(timeout) % 1000000;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  char buf[512];
  const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
  return n > 0 ? std::string(buf, n) : "";
}

TEST(SystemdNotify, ReadyThenWatchdogThenStopping) {
  // A short path: bazel's TEST_TMPDIR exceeds sun_path.
  const std::string path = absl::StrCat("/tmp/mm-notify-", ::getpid(), ".sock");
  ::unlink(path.c_str());
  UniqueFd sock(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(sock.valid());
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  ASSERT_LT(path.size(), sizeof(addr.sun_path));
  std::memcpy(addr.sun_path, path.data(), path.size());
  ASSERT_EQ(::bind(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  // The daemon inherits these, as systemd sets them for a Type=notify service with
  // WatchdogSec=0.4s.
  ::setenv("NOTIFY_SOCKET", path.c_str(), 1);
  ::setenv("WATCHDOG_USEC", "400000", 1);
  auto d = DaemonProcess::Start(testing::MigmoverdPath(), "notify");
  ::unsetenv("NOTIFY_SOCKET");
  ::unsetenv("WATCHDOG_USEC");
  ASSERT_TRUE(d.ok()) << d.status();

  std::vector<std::string> got;
  // READY first, then the watchdog, fed at least every 200 ms (counted over 2 s: a loaded
  // machine may delay one, never stop them).
  const std::string first = Next(sock.get(), absl::Seconds(10));
  EXPECT_TRUE(absl::StrContains(first, "READY=1")) << first;
  int feeds = 0;
  const absl::Time until = absl::Now() + absl::Seconds(2);
  while (absl::Now() < until) {
    const std::string m = Next(sock.get(), absl::Seconds(1));
    if (absl::StrContains(m, "WATCHDOG=1")) ++feeds;
  }
  EXPECT_GE(feeds, 4);
  (*d).reset();  // SIGTERM, and wait.
  bool stopping = false;
  for (std::string m = Next(sock.get(), absl::Seconds(1)); !m.empty();
       m = Next(sock.get(), absl::Seconds(1))) {
    stopping = stopping || absl::StrContains(m, "STOPPING=1");
  }
  EXPECT_TRUE(stopping);
  ::unlink(path.c_str());
}

}  // namespace
}  // namespace migmover
