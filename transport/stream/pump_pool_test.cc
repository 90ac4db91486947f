#include "transport/stream/pump_pool.h"

#include <vector>

#include "gtest/gtest.h"
#include "transport/io/io_queue_factory.h"

namespace migmover::stream {
namespace {

io::IoEngine TestEngine() {
  auto choice = io::ChooseIoEngine(io::IoEngine::kAuto);
  return choice.ok() ? choice->engine : io::IoEngine::kSyscalls;
}

TEST(PumpPoolTest, RefusesACountOutOfRange) {
  EXPECT_EQ(PumpPool::Create(0, TestEngine()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PumpPool::Create(65, TestEngine()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Sessions that start together spread over the workers: each lease goes to the least loaded.
TEST(PumpPoolTest, LeasesGoToTheLeastLoadedWorkers) {
  auto pool = PumpPool::Create(3, TestEngine());
  ASSERT_TRUE(pool.ok()) << pool.status();
  std::vector<PumpPool::Lease> a = (*pool)->Acquire(2);  // Workers 0 and 1.
  ASSERT_EQ(a.size(), 2u);
  EXPECT_NE(a[0].worker(), a[1].worker());
  std::vector<PumpPool::Lease> b = (*pool)->Acquire(1);  // Worker 2, the idle one.
  ASSERT_EQ(b.size(), 1u);
  EXPECT_NE(b[0].worker(), a[0].worker());
  EXPECT_NE(b[0].worker(), a[1].worker());
  EXPECT_EQ((*pool)->leased(0) + (*pool)->leased(1) + (*pool)->leased(2), 3u);
  // Never two leases of one request on the same worker, and never more than the pool has.
  std::vector<PumpPool::Lease> c = (*pool)->Acquire(8);
  EXPECT_EQ(c.size(), 3u);
  for (uint32_t i = 0; i < 3; ++i) EXPECT_EQ((*pool)->leased(i), 2u) << i;
}

TEST(PumpPoolTest, ALeaseIsGivenBackWhenDropped) {
  auto pool = PumpPool::Create(2, TestEngine());
  ASSERT_TRUE(pool.ok()) << pool.status();
  {
    std::vector<PumpPool::Lease> a = (*pool)->Acquire(1);
    PumpPool::Lease moved = std::move(a[0]);
    EXPECT_EQ(a[0].worker(), nullptr);
    EXPECT_NE(moved.worker(), nullptr);
    EXPECT_EQ((*pool)->leased(0), 1u);
  }
  EXPECT_EQ((*pool)->leased(0), 0u);
  EXPECT_EQ((*pool)->leased(1), 0u);
}

}  // namespace
}  // namespace migmover::stream
