// BufferPool: its buffers take memory only once used.
#include "transport/stream/buffer_pool.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"

namespace migmover::stream {
namespace {

// How many of the pages of [p, p + len) are resident (mincore).
size_t ResidentPages(const uint8_t* p, size_t len) {
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> v((len + page - 1) / page);
  if (::mincore(const_cast<uint8_t*>(p), len, v.data()) != 0) {
    ADD_FAILURE() << "mincore: " << std::strerror(errno);
    return 0;
  }
  size_t n = 0;
  for (unsigned char c : v) n += c & 1;
  return n;
}

// A stream's pool holds its replay buffer's reserve too (16 MiB by default): faulting all of
// it in when the stream starts cost 25 ms of a 4-device switchover and 16 MiB of RSS per device
// whatever the stream held. A buffer takes memory from its first use on, and only then.
TEST(BufferPoolTest, ABufferTakesMemoryOnlyOnceUsed) {
  constexpr uint32_t kCount = 64, kPayload = 256 * 1024, kHeadroom = 32;
  auto pool = BufferPool::Create(nullptr, kCount, kPayload, kHeadroom);
  ASSERT_TRUE(pool.ok()) << pool.status();
  const size_t stride = (*pool)->base(1) - (*pool)->base(0);
  EXPECT_EQ(ResidentPages((*pool)->base(0), stride * kCount), 0u);

  std::memset((*pool)->base(5), 0xa5, kHeadroom + kPayload);
  EXPECT_EQ(ResidentPages((*pool)->base(5), kHeadroom + kPayload),
            (kHeadroom + kPayload + 4095) / 4096);
  // Far enough from buffer 5 that a transparent huge page around it (THP "always") is not
  // counted against the rule.
  EXPECT_EQ(ResidentPages((*pool)->base(16), stride * (kCount - 16)), 0u);
}

// Payloads start right after the headroom, buffers do not overlap and every byte is writable.
TEST(BufferPoolTest, BuffersAreDisjointAndWritable) {
  auto pool = BufferPool::Create(nullptr, 4, 8192, 32);
  ASSERT_TRUE(pool.ok()) << pool.status();
  for (uint32_t i = 0; i < 4; ++i) {
    EXPECT_EQ((*pool)->payload(i), (*pool)->base(i) + 32);
    std::memset((*pool)->base(i), static_cast<int>(i + 1), 32 + 8192);
  }
  for (uint32_t i = 0; i < 4; ++i) {
    EXPECT_EQ((*pool)->base(i)[0], i + 1);
    EXPECT_EQ((*pool)->payload(i)[8191], i + 1);
  }
  EXPECT_FALSE((*pool)->registered());
  EXPECT_EQ((*pool)->buffer_index(0), io::kUnregistered);
  EXPECT_EQ((*pool)->all().size(), 4u);
}

TEST(BufferPoolTest, AnEmptyPoolIsRefused) {
  EXPECT_EQ(BufferPool::Create(nullptr, 0, 4096, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BufferPool::Create(nullptr, 4, 0, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace migmover::stream
