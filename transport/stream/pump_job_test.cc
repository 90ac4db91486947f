#include "transport/stream/pump_job.h"

#include <fcntl.h>
#include <unistd.h>

#include "gtest/gtest.h"
#include "transport/base/unique_fd.h"
#include "transport/uring/ring.h"

namespace migmover::stream {
namespace {

// A job with one request that never completes by itself (a read of an empty pipe).
class StuckJob final : public PumpJob {
 public:
  StuckJob(io::IoQueue* ring, int fd) : ring_(ring), fd_(fd) {}
  void Issue() override {
    if (issued_) return;
    ring_->Read(fd_, buf_, sizeof(buf_), io::kUnregistered, 1);
    issued_ = true;
  }
  void OnCompletion(const io::Completion&) override { completed_ = true; }
  void OnTick() override { ++ticks_; }
  bool Done() const override { return completed_ || !aborted_with_.ok(); }
  absl::Time WakeBy() const override { return absl::InfiniteFuture(); }
  void Abort(absl::Status why) override { aborted_with_ = std::move(why); }

  absl::Status aborted_with_;
  int ticks_ = 0;

 private:
  io::IoQueue* ring_;
  int fd_;
  char buf_[16];
  bool issued_ = false, completed_ = false;
};

// A ring that breaks under a running job aborts the job with the ring's error, naming the call:
// the job ends instead of spinning on a dead ring (its idle timeout would never fire either).
TEST(PumpJobTest, ARingFailureAbortsTheJobWithTheCallNamed) {
  auto ring = uring::Ring::Create(8);
  ASSERT_TRUE(ring.ok()) << ring.status();
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd r(p[0]), w(p[1]);
  StuckJob job(ring->get(), r.get());
  // Break the ring: its fd becomes /dev/null, so the next io_uring_enter fails.
  UniqueFd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
  ASSERT_GE(::dup2(null.get(), (*ring)->raw()->ring_fd), 0);
  DriveJob(ring->get(), job, absl::Milliseconds(10));
  ASSERT_FALSE(job.aborted_with_.ok());
  EXPECT_NE(job.aborted_with_.message().find("io_uring_submit_and_wait_timeout"),
            std::string::npos)
      << job.aborted_with_;
}

}  // namespace
}  // namespace migmover::stream
