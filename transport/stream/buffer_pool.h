// BufferPool: the fixed set of I/O buffers of one stream, allocated once, page-aligned, and
// registered with the stream's own queue so reads and writes use READ_FIXED / WRITE_FIXED. A
// stream on a shared pump worker (pump_worker.h) leaves its buffers unregistered: one queue has
// one table, and its streams come and go (measured: no difference for pipe and socket I/O).
// Each buffer has kFrameHeaderSize bytes of headroom before its payload, so a frame header and
// its payload leave in one send. Memory: the pool's address space is taken at Create, a
// buffer's pages from its first use on (registering pins the whole pool at once), so a replay
// buffer's reserve costs resident memory only as far as the stream holds unacknowledged frames.
#ifndef MIGMOVER_TRANSPORT_STREAM_BUFFER_POOL_H_
#define MIGMOVER_TRANSPORT_STREAM_BUFFER_POOL_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "transport/io/io_queue.h"

namespace migmover::stream {

class BufferPool {
 public:
  // `count` buffers of `headroom + payload_size` bytes each, registered with `ring` (null:
  // not registered). Errors: mmap's, the registration's.
  static absl::StatusOr<std::unique_ptr<BufferPool>> Create(io::IoQueue* ring, uint32_t count,
                                                            uint32_t payload_size,
                                                            uint32_t headroom);
  ~BufferPool();
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  uint32_t count() const { return count_; }
  uint32_t payload_size() const { return payload_size_; }
  // Start of buffer `i` (its headroom).
  uint8_t* base(uint32_t i) const { return mem_ + static_cast<size_t>(i) * stride_; }
  // Start of buffer `i`'s payload.
  uint8_t* payload(uint32_t i) const { return base(i) + headroom_; }
  uint32_t headroom() const { return headroom_; }
  bool registered() const { return registered_; }
  // What a request on buffer `i` names as its buffer index (io_queue.h): `i` if registered.
  int buffer_index(uint32_t i) const {
    return registered_ ? static_cast<int>(i) : io::kUnregistered;
  }
  // Every buffer index, 0..count-1 (for a job that uses the whole pool).
  std::span<const uint32_t> all() const { return all_; }

 private:
  BufferPool() = default;
  uint8_t* mem_ = nullptr;
  size_t bytes_ = 0;
  size_t stride_ = 0;
  uint32_t count_ = 0;
  uint32_t payload_size_ = 0;
  uint32_t headroom_ = 0;
  bool registered_ = false;
  std::vector<uint32_t> all_;
};

}  // namespace migmover::stream

#endif  // MIGMOVER_TRANSPORT_STREAM_BUFFER_POOL_H_
