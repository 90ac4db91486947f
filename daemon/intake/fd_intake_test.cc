#include "daemon/intake/fd_intake.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "transport/net/socket.h"

namespace migmover {
namespace {

// Unix socket paths are limited to 108 bytes; Bazel's TEST_TMPDIR is often longer.
std::string SocketPath(const std::string& name) {
  return "/tmp/mm-intake-test." + name + "." + std::to_string(getpid());
}

// Sends `text` with `fds` attached on a fresh connection; returns the reply line.
std::string RawRequest(const std::string& path, const std::string& text,
                       const std::vector<int>& fds) {
  auto conn = net::UnixConnect(path);
  EXPECT_TRUE(conn.ok()) << conn.status();
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
  EXPECT_GT(::sendmsg(conn->get(), &msg, 0), 0);
  std::string reply;
  char ch;
  while (::read(conn->get(), &ch, 1) == 1 && ch != '\n') reply.push_back(ch);
  return reply;
}

class FdIntakeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = SocketPath("intake");
    auto intake = FdIntake::Start(path_);
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

TEST_F(FdIntakeTest, RefusesRegularFileAsDevice) {
  std::string file = SocketPath("plain");
  UniqueFd fd(::open(file.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600));
  ASSERT_TRUE(fd.valid());
  auto r = SendFdToIntake(path_, FdPurpose::kVfioDevice, fd.get());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  r = SendFdToIntake(path_, FdPurpose::kSaveData, fd.get());
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

TEST_F(FdIntakeTest, UnknownHandle) {
  EXPECT_EQ(intake_->Take(424242).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace migmover
