#include "daemon/intake/fd_intake.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <grp.h>
#include <poll.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/time.h"

#include "daemon/testing/as_user.h"
#include "gtest/gtest.h"
#include "transport/net/socket.h"

namespace migmover {
namespace {

using ::migmover::testing::AsUser;

// Unix socket paths are limited to 108 bytes; Bazel's TEST_TMPDIR is often longer.
std::string SocketPath(const std::string& name) {
  return "/tmp/mm-intake-test." + name + "." + std::to_string(getpid());
}

// Sends `text` with `fds` attached on `conn`; returns the reply line ("" if none came within
// `timeout`).
std::string RequestOn(int conn, const std::string& text, const std::vector<int>& fds,
                      absl::Duration timeout = absl::Seconds(10)) {
  timeval tv = absl::ToTimeval(timeout);
  ::setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  iovec iov{const_cast<char*>(text.data()), text.size()};
  std::vector<char> control(CMSG_SPACE(sizeof(int) * std::max<size_t>(fds.size(), 1)));
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (!fds.empty()) {
    msg.msg_control = control.data();
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  EXPECT_GT(::sendmsg(conn, &msg, MSG_NOSIGNAL), 0);
  std::string reply;
  char ch;
  while (::read(conn, &ch, 1) == 1 && ch != '\n') reply.push_back(ch);
  return reply;
}

// The same on a fresh connection.
std::string RawRequest(const std::string& path, const std::string& text,
                       const std::vector<int>& fds, absl::Duration timeout = absl::Seconds(10)) {
  auto conn = net::UnixConnect(path);
  EXPECT_TRUE(conn.ok()) << conn.status();
  if (!conn.ok()) return "";
  return RequestOn(conn->get(), text, fds, timeout);
}

class FdIntakeTest : public ::testing::Test {
 protected:
  void SetUp() override { Restart(FdIntakeOptions()); }
  void Restart(FdIntakeOptions options) {
    intake_.reset();
    path_ = SocketPath("intake");
    auto intake = FdIntake::Start(path_, options);
    ASSERT_TRUE(intake.ok()) << intake.status();
    intake_ = std::move(*intake);
  }
  std::string path_;
  std::unique_ptr<FdIntake> intake_;
};

TEST_F(FdIntakeTest, AcceptsDataFdsAndHandsThemOutOnce) {
  auto pipe = MakePipe();
  auto handle = SendFdToIntake(path_, FdPurpose::kSaveData, pipe->read.get());
  ASSERT_TRUE(handle.ok()) << handle.status();
  auto got = intake_->Take(*handle);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->purpose, FdPurpose::kSaveData);
  // The received fd is the same pipe: what we write arrives through it.
  ASSERT_EQ(::write(pipe->write.get(), "x", 1), 1);
  char c = 0;
  EXPECT_EQ(::read(got->fd.get(), &c, 1), 1);
  EXPECT_EQ(c, 'x');
  EXPECT_EQ(intake_->Take(*handle).status().code(), absl::StatusCode::kNotFound);

  auto w = SendFdToIntake(path_, FdPurpose::kResumeData, pipe->write.get());
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_NE(*w, *handle);
}

TEST_F(FdIntakeTest, RefusesWrongAccessMode) {
  auto pipe = MakePipe();
  auto r = SendFdToIntake(path_, FdPurpose::kSaveData, pipe->write.get());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("not open for reading"), std::string::npos) << r.status();
  r = SendFdToIntake(path_, FdPurpose::kResumeData, pipe->read.get());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(FdIntakeTest, RefusesRegularFileAsDeviceTakesItAsSaveData) {
  std::string file = SocketPath("plain");
  UniqueFd fd(::open(file.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600));
  ASSERT_TRUE(fd.valid());
  auto r = SendFdToIntake(path_, FdPurpose::kVfioDevice, fd.get());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  // A file is a stream to save from (read like a VFIO data fd), never a device.
  r = SendFdToIntake(path_, FdPurpose::kSaveData, fd.get());
  EXPECT_TRUE(r.ok()) << r.status();
  // A directory is neither.
  UniqueFd dir(::open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  r = SendFdToIntake(path_, FdPurpose::kSaveData, dir.get());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  ::unlink(file.c_str());
}

TEST_F(FdIntakeTest, RefusesMalformedRequests) {
  auto pipe = MakePipe();
  const int r = pipe->read.get();
  EXPECT_EQ(RawRequest(path_, "save-data\n", {}).rfind("error INVALID_ARGUMENT", 0), 0u);
  EXPECT_EQ(RawRequest(path_, "save-data\n", {r, r}).rfind("error INVALID_ARGUMENT expected "
                                                           "exactly one fd",
                                                           0),
            0u);
  EXPECT_EQ(RawRequest(path_, "teleport\n", {r}).rfind("error INVALID_ARGUMENT unknown fd purpose",
                                                      0),
            0u);
  EXPECT_EQ(RawRequest(path_, "save-data", {r}).rfind("error INVALID_ARGUMENT", 0), 0u);
  EXPECT_EQ(RawRequest(path_, std::string(100, 'a') + "\n", {r}).rfind("error INVALID_ARGUMENT",
                                                                       0),
            0u);
  // More fds than the daemon's control buffer holds: truncated ancillary data.
  std::vector<int> many(16, r);
  EXPECT_EQ(RawRequest(path_, "save-data\n", many).rfind("error INVALID_ARGUMENT", 0), 0u);
  // Still serving after all that.
  EXPECT_TRUE(SendFdToIntake(path_, FdPurpose::kSaveData, r).ok());
}

// An agent that connects and says nothing held the intake's one thread for 5 s: every other
// agent waited behind it.
TEST_F(FdIntakeTest, AnIdleConnectionDoesNotDelayOthers) {
  auto idle = net::UnixConnect(path_);
  ASSERT_TRUE(idle.ok());
  auto pipe = MakePipe();
  EXPECT_EQ(RawRequest(path_, "save-data\n", {pipe->read.get()}, absl::Seconds(2)).rfind("ok ", 0),
            0u);
}

// An agent that sends request after request kept the intake serving it alone.
TEST_F(FdIntakeTest, AChattyConnectionDoesNotStarveOthers) {
  std::atomic<bool> stop{false};
  std::atomic<int> answered{0};
  auto chatty = net::UnixConnect(path_);
  ASSERT_TRUE(chatty.ok());
  std::thread t([&] {
    while (!stop.load()) {
      if (RequestOn(chatty->get(), "teleport\n", {}).empty()) break;
      ++answered;
    }
  });
  // It is being served (bounded: a broken intake fails here instead of hanging).
  const absl::Time until = absl::Now() + absl::Seconds(10);
  while (answered.load() < 10 && absl::Now() < until) std::this_thread::yield();
  ASSERT_GE(answered.load(), 10) << "the chatty client was never served";
  auto pipe = MakePipe();
  EXPECT_EQ(RawRequest(path_, "save-data\n", {pipe->read.get()}, absl::Seconds(2)).rfind("ok ", 0),
            0u);
  stop = true;
  t.join();
}

// A client that sends and never reads its replies fills its own socket: it loses its connection,
// and the others are served meanwhile.
TEST_F(FdIntakeTest, AClientThatDoesNotReadItsRepliesIsDropped) {
  auto greedy = net::UnixConnect(path_);
  ASSERT_TRUE(greedy.ok());
  bool dropped = false;
  for (int i = 0; i < 200000 && !dropped; ++i) {
    ssize_t n = ::send(greedy->get(), "teleport\n", 9, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) dropped = true;
    if (n < 0 && errno == EAGAIN) {
      auto pipe = MakePipe();
      EXPECT_EQ(
          RawRequest(path_, "save-data\n", {pipe->read.get()}, absl::Seconds(2)).rfind("ok ", 0),
          0u);
      pollfd p{greedy->get(), POLLOUT, 0};
      ::poll(&p, 1, 100);
    }
  }
  EXPECT_TRUE(dropped) << "the intake kept a client that reads nothing";
}

// A stream socket has no message boundaries: after a request that is not one "<purpose>\n" the
// next one's start is unknown, so the connection ends after its error (else every later reply
// would answer the wrong request).
TEST_F(FdIntakeTest, ARequestWithoutItsFramingEndsTheConnection) {
  auto conn = net::UnixConnect(path_);
  ASSERT_TRUE(conn.ok());
  auto pipe = MakePipe();
  EXPECT_EQ(RequestOn(conn->get(), std::string(100, 'a') + "\n", {pipe->read.get()})
                .rfind("error INVALID_ARGUMENT request longer than 64 bytes", 0),
            0u);
  char c;
  EXPECT_LE(::read(conn->get(), &c, 1), 0) << "closed after the one error (end or reset)";
  // A well-framed request for an unknown purpose keeps the connection.
  auto ok = net::UnixConnect(path_);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(RequestOn(ok->get(), "teleport\n", {pipe->read.get()})
                .rfind("error INVALID_ARGUMENT unknown fd purpose", 0),
            0u);
  EXPECT_EQ(RequestOn(ok->get(), "save-data\n", {pipe->read.get()}).rfind("ok ", 0), 0u);
}

TEST_F(FdIntakeTest, ConnectionsBeyondTheCapAreRefusedAtOnce) {
  FdIntakeOptions o;
  o.max_connections = 2;
  Restart(o);
  auto a = net::UnixConnect(path_);
  auto b = net::UnixConnect(path_);
  ASSERT_TRUE(a.ok() && b.ok());
  auto pipe = MakePipe();
  EXPECT_EQ(RawRequest(path_, "save-data\n", {pipe->read.get()}, absl::Seconds(5))
                .rfind("error RESOURCE_EXHAUSTED 2 connections already open", 0),
            0u);
  // The two admitted are served.
  EXPECT_EQ(RequestOn(a->get(), "save-data\n", {pipe->read.get()}).rfind("ok ", 0), 0u);
}

// Handles an agent never attached were kept forever (after 1024 the intake refused everyone);
// now their fds are closed after the handle's lifetime.
TEST_F(FdIntakeTest, UnattachedHandlesExpireAndTheirFdsClose) {
  FdIntakeOptions o;
  o.handle_ttl = absl::Milliseconds(200);
  Restart(o);
  auto pipe = MakePipe();
  auto handle = SendFdToIntake(path_, FdPurpose::kSaveData, pipe->read.get());
  ASSERT_TRUE(handle.ok()) << handle.status();
  pipe->read.Reset();  // The daemon's copy is now the only reader.
  EXPECT_EQ(intake_->pending(), 1u);
  // The event: the write end reports an error once the last reader is gone.
  pollfd pfd{pipe->write.get(), 0, 0};
  ASSERT_EQ(::poll(&pfd, 1, 10000), 1) << "the expired fd was never closed";
  EXPECT_TRUE(pfd.revents & POLLERR);
  auto taken = intake_->Take(*handle);
  EXPECT_EQ(taken.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(taken.status().message().find("not attached within 200ms"), std::string::npos)
      << taken.status();
  EXPECT_EQ(intake_->pending(), 0u);
}

TEST_F(FdIntakeTest, RefusesOPathFds) {
  UniqueFd path_only(::open("/dev/null", O_PATH | O_CLOEXEC));
  ASSERT_TRUE(path_only.valid());
  for (FdPurpose p : {FdPurpose::kSaveData, FdPurpose::kVfioDevice, FdPurpose::kResumeData}) {
    auto r = SendFdToIntake(path_, p, path_only.get());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << FdPurposeName(p);
    EXPECT_NE(r.status().message().find("O_PATH"), std::string::npos) << r.status();
  }
}

TEST_F(FdIntakeTest, RefusesFilesThatAreNotVfioDevicesAsVfioDevices) {
  UniqueFd efd(::eventfd(0, EFD_CLOEXEC));
  ASSERT_TRUE(efd.valid());
  auto r = SendFdToIntake(path_, FdPurpose::kVfioDevice, efd.get());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("[eventfd]"), std::string::npos) << r.status();
  UniqueFd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
  r = SendFdToIntake(path_, FdPurpose::kVfioDevice, null.get());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("class 'mem'"), std::string::npos) << r.status();
}

TEST_F(FdIntakeTest, TheSocketIsNeverLooserThanItsModeWhateverTheUmask) {
  const mode_t old = ::umask(0);
  FdIntakeOptions o;
  o.socket_mode = 0600;
  Restart(o);
  ::umask(old);
  struct stat st;
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
}

// SO_PEERCRED is checked, not just logged: a uid the policy does not list is refused even when
// the socket's mode lets it connect.
TEST_F(FdIntakeTest, AnUnauthorizedUidIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to connect as another uid";
  auto access = LocalAccess::Parse("", "");
  ASSERT_TRUE(access.ok());
  FdIntakeOptions o;
  o.socket_mode = 0666;  // The kernel lets anyone connect: the policy must refuse.
  o.access = &*access;
  Restart(o);
  const std::string path = path_;
  auto ask = [path] {
    auto pipe = MakePipe();
    if (!pipe.ok()) return std::string("pipe failed");
    return RawRequest(path, "save-data\n", {pipe->read.get()});
  };
  EXPECT_EQ(AsUser(65534, ask).rfind("error PERMISSION_DENIED", 0), 0u);
  EXPECT_EQ(intake_->pending(), 0u);
  EXPECT_EQ(ask().rfind("ok ", 0), 0u) << "root is allowed";

  auto listed = LocalAccess::Parse("65534", "");
  ASSERT_TRUE(listed.ok());
  o.access = &*listed;
  Restart(o);
  EXPECT_EQ(AsUser(65534, ask).rfind("ok ", 0), 0u);
}

TEST_F(FdIntakeTest, UnknownHandle) {
  EXPECT_EQ(intake_->Take(424242).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace migmover
