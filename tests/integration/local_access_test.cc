// Who may use a real daemon's unix sockets: the gRPC API and the fd intake check the peer's
// credentials (SO_PEERCRED) on every connection, so a uid the policy does not list is refused
// even when the socket's mode lets it connect; and the socket files never have looser modes.
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <grp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <string>

#include "absl/strings/str_cat.h"
#include "daemon/intake/fd_intake.h"
#include "daemon/testing/daemon_process.h"
#include "daemon/testing/as_user.h"
#include "gtest/gtest.h"
#include "transport/net/socket.h"

namespace migmover {
namespace {

using ::migmover::testing::AsUser;

using testing::DaemonProcess;

constexpr uid_t kNobody = 65534;

// What a gRPC client hears first: the server's HTTP/2 SETTINGS after our preface, or the end
// of the connection when the daemon refused it. "bytes", "closed", or the error.
std::string FirstWordsOfGrpc(const std::string& path) {
  auto conn = net::UnixConnect(path);
  if (!conn.ok()) return std::string(conn.status().message());
  static constexpr char kPreface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  // An empty SETTINGS frame after the preface, as every client sends.
  std::string hello(kPreface, sizeof(kPreface) - 1);
  hello += std::string("\0\0\0\x04\0\0\0\0\0", 9);
  if (!net::SendAll(conn->get(), hello, absl::Now() + absl::Seconds(5)).ok()) return "closed";
  timeval tv{10, 0};
  ::setsockopt(conn->get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  char b;
  ssize_t n = ::read(conn->get(), &b, 1);
  if (n == 1) return "bytes";
  // Closed with our preface unread: unix sockets report that as ECONNRESET.
  if (n == 0 || errno == ECONNRESET) return "closed";
  return absl::StrCat("read failed: ", std::strerror(errno));
}

class LocalAccessTest : public ::testing::Test {
 protected:
  void StartDaemon(std::vector<std::string> flags) {
    auto d = DaemonProcess::Start(testing::MigmoverdPath(), "acl", flags);
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = std::move(*d);
    // Let other users reach the sockets' directory: the sockets themselves are what is tested.
    const std::string dir = daemon_->grpc_socket().substr(0, daemon_->grpc_socket().rfind('/'));
    ASSERT_EQ(::chmod(dir.c_str(), 0755), 0);
  }
  void TearDown() override {
    if (HasFailure() && daemon_) std::cerr << daemon_->Log();
  }
  std::unique_ptr<DaemonProcess> daemon_;
};

TEST_F(LocalAccessTest, AnUnlistedUidIsRefusedOnBothSocketsEvenWhenTheModeLetsItIn) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to connect as another uid";
  StartDaemon({"--socket_mode=0666"});
  const std::string grpc = daemon_->grpc_socket(), fd = daemon_->fd_socket();
  EXPECT_EQ(FirstWordsOfGrpc(grpc), "bytes") << "root is served";
  EXPECT_EQ(AsUser(kNobody, [&] { return FirstWordsOfGrpc(grpc); }), "closed");
  const std::string intake = AsUser(kNobody, [&] {
    auto p = MakePipe();
    if (!p.ok()) return std::string("pipe failed");
    auto h = SendFdToIntake(fd, FdPurpose::kSaveData, p->read.get());
    return h.ok() ? std::string("accepted") : std::string(h.status().ToString());
  });
  EXPECT_NE(intake.find("PERMISSION_DENIED"), std::string::npos) << intake;
  EXPECT_NE(daemon_->Log().find(absl::StrCat("gRPC connection refused: pid ")),
            std::string::npos);
  EXPECT_NE(daemon_->Log().find(absl::StrCat("uid ", kNobody, " gid ", kNobody,
                                             " may not use the gRPC API")),
            std::string::npos);
  EXPECT_NE(daemon_->Log().find("may not use the fd intake"), std::string::npos);
}

TEST_F(LocalAccessTest, AListedUidIsServed) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to connect as another uid";
  StartDaemon({"--socket_mode=0666", absl::StrCat("--allowed_uids=", kNobody)});
  const std::string grpc = daemon_->grpc_socket(), fd = daemon_->fd_socket();
  EXPECT_EQ(AsUser(kNobody, [&] { return FirstWordsOfGrpc(grpc); }), "bytes");
  const std::string intake = AsUser(kNobody, [&] {
    auto p = MakePipe();
    if (!p.ok()) return std::string("pipe failed");
    auto h = SendFdToIntake(fd, FdPurpose::kSaveData, p->read.get());
    return h.ok() ? std::string("accepted") : std::string(h.status().ToString());
  });
  EXPECT_EQ(intake, "accepted");
}

// The kernel's own gate: with the default mode (0660, owner root) another uid cannot even
// connect; and the files have exactly the configured mode under any umask.
TEST_F(LocalAccessTest, SocketFilesHaveExactlyTheConfiguredMode) {
  const mode_t old = ::umask(0);  // The daemon inherits it.
  StartDaemon({"--socket_mode=0600"});
  ::umask(old);
  for (const std::string& path : {daemon_->grpc_socket(), daemon_->fd_socket()}) {
    struct stat st;
    ASSERT_EQ(::stat(path.c_str(), &st), 0) << path;
    EXPECT_EQ(st.st_mode & 07777, 0600u) << path;
  }
  if (::geteuid() == 0) {
    const std::string grpc = daemon_->grpc_socket();
    EXPECT_NE(AsUser(kNobody, [&] { return FirstWordsOfGrpc(grpc); }).find("EACCES"),
              std::string::npos);
  }
}

TEST_F(LocalAccessTest, BadFlagsAreRefusedAtStart) {
  for (const std::string& flag :
       {std::string("--socket_mode=999"), std::string("--allowed_uids=no-such-user-here"),
        std::string("--fd_handle_ttl_s=0")}) {
    auto d = DaemonProcess::Start(testing::MigmoverdPath(), "bad", {flag});
    EXPECT_FALSE(d.ok()) << flag;
  }
}

}  // namespace
}  // namespace migmover
