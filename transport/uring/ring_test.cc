#include "transport/uring/ring.h"

#include <fcntl.h>
#include <unistd.h>

#include <vector>

#include "gtest/gtest.h"
#include "transport/base/unique_fd.h"

namespace migmover::uring {
namespace {

// Replaces the ring's fd with /dev/null: every io_uring_enter then fails (EOPNOTSUPP), as a
// real ring failure would, while the mapped queues stay valid.
void BreakRing(Ring& ring) {
  UniqueFd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
  ASSERT_TRUE(null.valid());
  ASSERT_GE(::dup2(null.get(), ring.raw()->ring_fd), 0);
  if (ring.raw()->enter_ring_fd != ring.raw()->ring_fd) {
    ASSERT_GE(::dup2(null.get(), ring.raw()->enter_ring_fd), 0);
  }
}

// Far more requests than the submission queue (4) and the completion queue (8) hold, queued
// without reaping: full queues are submitted to make room and overflowing completions are kept,
// never an error, and every request completes exactly once.
TEST(RingTest, FullQueuesAreBackpressureNotErrors) {
  auto ring = Ring::Create(4);
  ASSERT_TRUE(ring.ok()) << ring.status();
  constexpr int kRequests = 300;
  for (int i = 0; i < kRequests; ++i) {
    io_uring_sqe* sqe = (*ring)->Sqe();
    ASSERT_NE(sqe, nullptr);
    io_uring_prep_nop(sqe);
    io_uring_sqe_set_data64(sqe, static_cast<uint64_t>(i));
  }
  ASSERT_TRUE((*ring)->Submit().ok());
  std::vector<int> seen(kRequests, 0);
  int got = 0;
  while (got < kRequests) {
    Completion batch[16];
    absl::StatusOr<size_t> n = (*ring)->WaitBatch(absl::Seconds(5), batch);
    ASSERT_TRUE(n.ok()) << n.status();
    ASSERT_GT(*n, 0u) << "completions lost after " << got;
    for (size_t k = 0; k < *n; ++k) {
      ASSERT_LT(batch[k].user_data, static_cast<uint64_t>(kRequests));
      EXPECT_EQ(batch[k].res, 0);
      ++seen[batch[k].user_data];
      ++got;
    }
  }
  for (int i = 0; i < kRequests; ++i) EXPECT_EQ(seen[i], 1) << "request " << i;
  EXPECT_TRUE((*ring)->status().ok());
}

// A failed io_uring_enter breaks the ring for good: the call that failed is named, and every
// later submit, cancel and wait returns the same error instead of looping.
TEST(RingTest, AFailedEnterBreaksTheRingWithTheCallNamed) {
  auto ring = Ring::Create(8);
  ASSERT_TRUE(ring.ok()) << ring.status();
  BreakRing(**ring);
  io_uring_prep_nop((*ring)->Sqe());
  absl::Status s = (*ring)->Submit();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("io_uring_submit"), std::string::npos) << s;
  Completion c;
  absl::StatusOr<bool> waited = (*ring)->Wait(absl::Milliseconds(10), &c);
  ASSERT_FALSE(waited.ok());
  EXPECT_EQ(waited.status(), s);
  EXPECT_EQ((*ring)->Cancel(42), s);
  EXPECT_EQ((*ring)->CancelFd(0), s);
  EXPECT_EQ((*ring)->status(), s);
  // SQEs are still handed out (never null), however many: nothing will submit them.
  for (int i = 0; i < 64; ++i) ASSERT_NE((*ring)->Sqe(), nullptr);
}

// The same when the failure comes while the submission queue is full: Sqe() does not spin.
TEST(RingTest, AFailureWhileTheQueueIsFullIsRecorded) {
  auto ring = Ring::Create(4);
  ASSERT_TRUE(ring.ok()) << ring.status();
  BreakRing(**ring);
  for (int i = 0; i < 32; ++i) io_uring_prep_nop((*ring)->Sqe());
  EXPECT_FALSE((*ring)->status().ok());
  EXPECT_NE((*ring)->status().message().find("submission queue full"), std::string::npos)
      << (*ring)->status();
  EXPECT_EQ((*ring)->Submit(), (*ring)->status());
}

}  // namespace
}  // namespace migmover::uring
