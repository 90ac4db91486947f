// Data-fd mode with PRE_COPY against real daemons: the agent runs the FSM and hands the daemons
// its save/resume data fds. While the agent's device is in PRE_COPY an empty fd is "no data
// now", however long the VMM pauses (keepalives flow, no idle timeout fires); the agent's
// Switchover says the device is in STOP_COPY and the daemon reads on to the end; the status
// counts each byte in the phase it moved in.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "daemon/intake/fd_intake.h"
#include "gtest/gtest.h"
#include "tests/integration/two_daemons.h"

namespace migmover {
namespace {

using testing::TwoDaemons;
using v1::SessionStatus;

constexpr uint32_t kIdleTimeoutMs = 2000;

class DataFd : public TwoDaemons {
 protected:
  // Prepare and Start with a short idle timeout: a pause longer than it must not end them.
  void PrepareAndStart(const std::string& id, const std::string& device) {
    {
      grpc::ClientContext ctx;
      v1::PrepareDestinationRequest req;
      req.set_session_id(id);
      req.add_devices(device);
      req.mutable_options()->set_data_path("copy");
      req.mutable_options()->set_idle_timeout_ms(kIdleTimeoutMs);
      SessionStatus out;
      grpc::Status s = dst_->stub()->PrepareDestination(&ctx, req, &out);
      ASSERT_TRUE(s.ok()) << s.error_message();
      Remember(id, out.token());
    }
    grpc::ClientContext ctx;
    v1::StartSourceRequest req;
    req.set_session_id(id);
    req.add_devices(device);
    req.set_peer(dst_->peer_address());
    req.set_token(SecretOf(id));
    req.set_precopy(true);
    req.mutable_options()->set_data_path("copy");
    req.mutable_options()->set_idle_timeout_ms(kIdleTimeoutMs);
    req.mutable_options()->set_streams(1);
    SessionStatus out;
    grpc::Status s = src_->stub()->StartSource(&ctx, req, &out);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }

  // Waits (WatchSession) until the source has moved `bytes` in PRE_COPY.
  SessionStatus AwaitPrecopyBytes(const std::string& id, uint64_t bytes) {
    SessionStatus s;
    WatchSourceUntil(
        id, [&](const SessionStatus& st) { return st.precopy_bytes() >= bytes || Final(st); },
        &s, 30);
    EXPECT_GE(s.precopy_bytes(), bytes) << s.DebugString();
    return s;
  }

  static std::vector<uint8_t> Random(size_t n, unsigned seed) {
    std::vector<uint8_t> v(n);
    std::mt19937 rng(seed);
    for (auto& b : v) b = static_cast<uint8_t>(rng());
    return v;
  }
  static void WriteAll(int fd, const uint8_t* p, size_t n) {
    while (n > 0) {
      ssize_t w = ::write(fd, p, n);
      ASSERT_GT(w, 0) << errno;
      p += w;
      n -= static_cast<size_t>(w);
    }
  }

  // The destination's resume-data pipe, drained into `got` by a thread.
  void AttachResumePipe(const std::string& name) {
    auto out = MakePipe();
    ASSERT_TRUE(out.ok());
    auto h = SendFdToIntake(dst_->fd_socket(), FdPurpose::kResumeData, out->write.get());
    ASSERT_TRUE(h.ok()) << h.status();
    out->write.Reset();
    ASSERT_TRUE(AttachHandle(*dst_, name, *h).ok());
    resume_read_ = std::move(out->read);
    reader_ = std::thread([this] {
      std::vector<uint8_t> buf(1 << 16);
      ssize_t n;
      while ((n = ::read(resume_read_.get(), buf.data(), buf.size())) > 0) {
        got_.insert(got_.end(), buf.data(), buf.data() + n);
      }
    });
  }
  void TearDown() override {
    if (reader_.joinable()) reader_.join();
    TwoDaemons::TearDown();
  }

  UniqueFd resume_read_;
  std::thread reader_;
  std::vector<uint8_t> got_;
};

TEST_F(DataFd, PrecopyOnAPipeOutlastsTheIdleTimeoutWhileTheVmmPauses) {
  auto in = MakePipe();
  ASSERT_TRUE(in.ok());
  auto h = SendFdToIntake(src_->fd_socket(), FdPurpose::kSaveData, in->read.get());
  ASSERT_TRUE(h.ok()) << h.status();
  in->read.Reset();
  ASSERT_TRUE(AttachHandle(*src_, "vm", *h).ok());
  AttachResumePipe("vm");
  const std::vector<uint8_t> data = Random((2 << 20) + (512 << 10), 11);
  PrepareAndStart("pause", "vm");

  WriteAll(in->write.get(), data.data(), 1 << 20);
  AwaitPrecopyBytes("pause", 1 << 20);
  // The VMM pauses for more than twice the idle timeout (the scenario itself, not a wait for
  // an event): the session lives on.
  absl::SleepFor(absl::Milliseconds(2 * kIdleTimeoutMs + 500));
  WriteAll(in->write.get(), data.data() + (1 << 20), 1 << 20);
  SessionStatus s = AwaitPrecopyBytes("pause", 2 << 20);
  EXPECT_EQ(s.phase(), SessionStatus::PRE_COPY) << s.DebugString();
  EXPECT_EQ(s.stop_copy_bytes(), 0u);

  // The agent's device is in STOP_COPY; its VMM pauses at its own switchover point before
  // writing the rest, then closes.
  ASSERT_TRUE(Switchover("pause").ok());
  absl::SleepFor(absl::Milliseconds(kIdleTimeoutMs + 500));
  WriteAll(in->write.get(), data.data() + (2 << 20), 512 << 10);
  in->write.Reset();
  SessionStatus src = WaitFinal(*src_, "pause");
  SessionStatus dst = WaitFinal(*dst_, "pause");
  EXPECT_EQ(src.phase(), SessionStatus::SUCCEEDED) << src.DebugString();
  EXPECT_EQ(dst.phase(), SessionStatus::SUCCEEDED) << dst.DebugString();
  EXPECT_EQ(src.precopy_bytes(), 2u << 20);
  EXPECT_EQ(src.stop_copy_bytes(), 512u << 10);
  // A repeated Switchover (a lost reply) is no error, even once the session ended.
  EXPECT_TRUE(Switchover("pause").ok());
  reader_.join();
  EXPECT_EQ(got_, data);
}

TEST_F(DataFd, PrecopyOnASocketEndsAtTheWritersShutdown) {
  // A socket's writer ends its stream with shutdown(SHUT_WR): readable, nothing to read, and no
  // hang-up (the other direction stays open).
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd vmm(sv[0]), daemon_end(sv[1]);
  auto h = SendFdToIntake(src_->fd_socket(), FdPurpose::kSaveData, daemon_end.get());
  ASSERT_TRUE(h.ok()) << h.status();
  daemon_end.Reset();
  ASSERT_TRUE(AttachHandle(*src_, "sk", *h).ok());
  AttachResumePipe("sk");
  const std::vector<uint8_t> data = Random(3 << 20, 13);
  PrepareAndStart("sock", "sk");
  WriteAll(vmm.get(), data.data(), 2 << 20);
  AwaitPrecopyBytes("sock", 2 << 20);
  ASSERT_TRUE(Switchover("sock").ok());
  WriteAll(vmm.get(), data.data() + (2 << 20), 1 << 20);
  ASSERT_EQ(::shutdown(vmm.get(), SHUT_WR), 0);
  SessionStatus src = WaitFinal(*src_, "sock", 30);
  SessionStatus dst = WaitFinal(*dst_, "sock", 30);
  EXPECT_EQ(src.phase(), SessionStatus::SUCCEEDED) << src.DebugString();
  EXPECT_EQ(dst.phase(), SessionStatus::SUCCEEDED) << dst.DebugString();
  EXPECT_EQ(src.precopy_bytes(), 2u << 20);
  EXPECT_EQ(src.stop_copy_bytes(), 1u << 20);
  reader_.join();
  EXPECT_EQ(got_, data);
}

TEST_F(DataFd, PrecopyOnAFileReadsEmptyAsNoDataNow) {
  // A file-like fd (as a VFIO migration data fd): a read at its current end returns 0, and
  // later data follows.
  UniqueFd file(::memfd_create("save-data", MFD_CLOEXEC));
  ASSERT_TRUE(file.valid());
  UniqueFd writer(::open(absl::StrCat("/proc/self/fd/", file.get()).c_str(), O_WRONLY | O_CLOEXEC));
  ASSERT_TRUE(writer.valid());
  auto h = SendFdToIntake(src_->fd_socket(), FdPurpose::kSaveData, file.get());
  ASSERT_TRUE(h.ok()) << h.status();
  file.Reset();
  ASSERT_TRUE(AttachHandle(*src_, "vf", *h).ok());
  AttachResumePipe("vf");
  const std::vector<uint8_t> data = Random(3 << 20, 12);
  WriteAll(writer.get(), data.data(), 1 << 20);
  PrepareAndStart("file", "vf");
  AwaitPrecopyBytes("file", 1 << 20);
  absl::SleepFor(absl::Milliseconds(kIdleTimeoutMs + 500));  // Empty reads meanwhile.
  WriteAll(writer.get(), data.data() + (1 << 20), 2 << 20);
  AwaitPrecopyBytes("file", 3 << 20);
  ASSERT_TRUE(Switchover("file").ok());
  SessionStatus src = WaitFinal(*src_, "file");
  SessionStatus dst = WaitFinal(*dst_, "file");
  EXPECT_EQ(src.phase(), SessionStatus::SUCCEEDED) << src.DebugString();
  EXPECT_EQ(dst.phase(), SessionStatus::SUCCEEDED) << dst.DebugString();
  reader_.join();
  EXPECT_EQ(got_, data);
}

}  // namespace
}  // namespace migmover
