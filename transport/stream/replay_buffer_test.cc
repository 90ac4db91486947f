#include "transport/stream/replay_buffer.h"

#include <vector>

#include "gtest/gtest.h"

namespace migmover::stream {
namespace {

TEST(ReplayBufferTest, HoldsFramesInStreamOrderUpToItsCapacity) {
  ReplayBuffer r(3);
  EXPECT_TRUE(r.enabled());
  EXPECT_TRUE(r.Hold(7, 0, 100));
  EXPECT_FALSE(r.Hold(8, 150, 100)) << "a hole after offset 100";
  EXPECT_FALSE(r.Hold(8, 50, 100)) << "an overlap";
  EXPECT_TRUE(r.Hold(8, 100, 100));
  EXPECT_TRUE(r.Hold(2, 200, 50));
  EXPECT_FALSE(r.Hold(3, 250, 10)) << "full";
  EXPECT_EQ(r.frames(), 3u);
  EXPECT_EQ(r.bytes(), 250u);
  EXPECT_TRUE(r.Holds(8));
  EXPECT_FALSE(r.Holds(3));
  std::vector<uint64_t> offsets;
  r.MarkCounted(8);
  r.MarkDigested(8);
  r.MarkDigested(7);
  std::vector<bool> counted, digested;
  r.ForEach([&](const ReplayBuffer::Frame& f) {
    offsets.push_back(f.offset);
    counted.push_back(f.counted);
    digested.push_back(f.digested);
  });
  EXPECT_EQ(counted, (std::vector<bool>{false, true, false}));
  EXPECT_EQ(digested, (std::vector<bool>{true, true, false}));
  EXPECT_EQ(r.first_offset(999), 0u);
  EXPECT_EQ(ReplayBuffer(2).first_offset(999), 999u);
  EXPECT_EQ(offsets, (std::vector<uint64_t>{0, 100, 200}));
}

TEST(ReplayBufferTest, AnAckFreesTheFramesItCoversOldestFirst) {
  ReplayBuffer r(4);
  ASSERT_TRUE(r.Hold(1, 0, 100));
  ASSERT_TRUE(r.Hold(2, 100, 100));
  ASSERT_TRUE(r.Hold(3, 200, 100));
  std::vector<uint32_t> freed;
  auto take = [&](uint32_t slot) {
    freed.push_back(slot);
    return true;
  };
  // Half of the second frame written: only the first is done with.
  EXPECT_EQ(r.Release(150, take), 1u);
  EXPECT_EQ(freed, (std::vector<uint32_t>{1}));
  EXPECT_EQ(r.bytes(), 200u);
  EXPECT_EQ(r.Release(300, take), 2u);
  EXPECT_EQ(freed, (std::vector<uint32_t>{1, 2, 3}));
  EXPECT_EQ(r.frames(), 0u);
  // The ring wraps: room again for as many as its capacity.
  for (uint32_t i = 0; i < 4; ++i) EXPECT_TRUE(r.Hold(10 + i, 300 + 10 * i, 10));
  EXPECT_FALSE(r.Hold(20, 340, 10));
}

TEST(ReplayBufferTest, AFrameTheKernelStillReadsStaysWithThoseAfterIt) {
  ReplayBuffer r(4);
  ASSERT_TRUE(r.Hold(1, 0, 100));
  ASSERT_TRUE(r.Hold(2, 100, 100));
  ASSERT_TRUE(r.Hold(3, 200, 100));
  // Acknowledged all, but frame 2's send has not completed (a striped send still in flight).
  std::vector<uint32_t> freed;
  EXPECT_EQ(r.Release(300, [&](uint32_t slot) {
              if (slot == 2) return false;
              freed.push_back(slot);
              return true;
            }),
            1u);
  EXPECT_EQ(freed, (std::vector<uint32_t>{1}));
  EXPECT_TRUE(r.Holds(2));
  EXPECT_TRUE(r.Holds(3));
  r.Clear();
  EXPECT_EQ(r.frames(), 0u);
  EXPECT_EQ(r.bytes(), 0u);
  EXPECT_FALSE(ReplayBuffer(0).enabled());
}

}  // namespace
}  // namespace migmover::stream
