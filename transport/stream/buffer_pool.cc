#include "transport/stream/buffer_pool.h"

#include <sys/mman.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "transport/base/errno_status.h"
#include "transport/base/status_macros.h"

namespace migmover::stream {

absl::StatusOr<std::unique_ptr<BufferPool>> BufferPool::Create(io::IoQueue* ring, uint32_t count,
                                                               uint32_t payload_size,
                                                               uint32_t headroom) {
  if (count == 0 || payload_size == 0) {
    return absl::InvalidArgumentError("BufferPool: count and payload size must be positive");
  }
  std::unique_ptr<BufferPool> pool(new BufferPool());
  pool->count_ = count;
  pool->payload_size_ = payload_size;
  pool->headroom_ = headroom;
  // Page-align each buffer so the payload of a READ_FIXED sits on its own pages.
  const size_t page = 4096;
  pool->stride_ = (static_cast<size_t>(headroom) + payload_size + page - 1) / page * page;
  pool->bytes_ = pool->stride_ * count;
  // Not populated: a source's pool also holds its replay buffer's reserve (16 MiB by default),
  // and faulting all of it in at the stream's first pump cost 25 ms of a 4-device switchover
  // and 16 MiB of RSS per device whatever the stream held. The free lists reuse the buffer freed
  // last, so the pages in use stay those of the most frames the stream held at once.
  void* mem = ::mmap(nullptr, pool->bytes_, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    return ErrnoStatus(absl::StrCat("mmap(", pool->bytes_, " bytes of stream buffers)"), errno);
  }
  pool->mem_ = static_cast<uint8_t*>(mem);
  if (ring != nullptr) {
    std::vector<iovec> iov(count);
    for (uint32_t i = 0; i < count; ++i) iov[i] = {pool->base(i), pool->stride_};
    RETURN_IF_ERROR(ring->RegisterBuffers(iov));
    pool->registered_ = true;
  }
  for (uint32_t i = 0; i < count; ++i) pool->all_.push_back(i);
  return pool;
}

BufferPool::~BufferPool() {
  if (mem_ != nullptr) ::munmap(mem_, bytes_);
}

}  // namespace migmover::stream
