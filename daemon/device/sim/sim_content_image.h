// SimContentImage: the benchmark device's state, prepared once in memory so that serving it
// costs what a real driver's data fd costs. A real driver's saving fd is read from kernel
// buffers the device filled by DMA: the only CPU work on the path is the read's copy. The
// checked device (the default) instead generates every chunk's content on the path and the
// resuming side regenerates and compares it, which costs more than the mover itself.
//
// The image holds up to kMaxImageBytes of distinct chunk payloads ("slots") in a memfd; chunk c
// at generation g is served from slot (c + g) % slots. The saving side splices a slot's pages
// into its data pipe (page references, no copy), so the reader's read() makes the one copy. The
// stream's integrity digest is built from per-record digests (sim_stream.h, "image content"),
// so neither side hashes a payload on the saving path: a slot's XXH3-64 is computed here, once.
//
// Immutable after Create; thread-safe.
#ifndef MIGMOVER_DAEMON_DEVICE_SIM_SIM_CONTENT_IMAGE_H_
#define MIGMOVER_DAEMON_DEVICE_SIM_SIM_CONTENT_IMAGE_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "transport/base/unique_fd.h"

namespace migmover::sim {

class SimContentImage {
 public:
  // At most this much distinct content per device, so the image stays flat in device size.
  // Larger than a last-level cache, so the reader's copy is not served from cache.
  static constexpr uint64_t kMaxImageBytes = 256ull << 20;

  // Bytes an image for this device holds, its slots' digests included (charged to the daemon's
  // --max_memory; the memfd's pages are not mapped, so they count in no process's RSS).
  static uint64_t ImageBytes(uint64_t state_size, uint32_t chunk_size);
  // How many distinct chunks it holds.
  static uint64_t Slots(uint64_t state_size, uint32_t chunk_size);

  // Generates the payload of every slot (FillChunk(seed, slot, 0)) into a new memfd and digests
  // it. Errors: memfd_create/pwrite failures, naming the call (ENOMEM/ENOSPC when the host's
  // shared memory is exhausted).
  static absl::StatusOr<std::unique_ptr<SimContentImage>> Create(uint64_t seed,
                                                                 uint64_t state_size,
                                                                 uint32_t chunk_size);

  // The slot chunk `chunk` at `generation` is served from.
  uint64_t SlotFor(uint64_t chunk, uint32_t generation) const {
    return (chunk + generation) % slots_;
  }
  // The memfd holding the slots back to back, each chunk_size bytes.
  int fd() const { return fd_.get(); }
  uint64_t SlotOffset(uint64_t slot) const { return slot * chunk_size_; }
  // XXH3-64 of the first `length` bytes of `slot` (length is the chunk size, or the state's
  // last, shorter chunk's length).
  uint64_t PayloadDigest(uint64_t slot, uint32_t length) const;

 private:
  SimContentImage() = default;

  UniqueFd fd_;
  uint64_t slots_ = 0;
  uint32_t chunk_size_ = 0;
  uint32_t tail_length_ = 0;          // The last chunk's length if shorter than a chunk, else 0.
  std::vector<uint64_t> full_digest_;  // Per slot, over chunk_size bytes.
  std::vector<uint64_t> tail_digest_;  // Per slot, over tail_length_ bytes (if any).
};

}  // namespace migmover::sim

#endif  // MIGMOVER_DAEMON_DEVICE_SIM_SIM_CONTENT_IMAGE_H_
