#include "daemon/device/sim/sim_content_image.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <span>

#include "absl/strings/str_cat.h"
#include "daemon/device/sim/sim_stream.h"
#include "transport/base/errno_status.h"
#include "transport/base/stream_digest.h"

namespace migmover::sim {

uint64_t SimContentImage::ImageBytes(uint64_t state_size, uint32_t chunk_size) {
  return Slots(state_size, chunk_size) * (chunk_size + 2 * sizeof(uint64_t));
}

uint64_t SimContentImage::Slots(uint64_t state_size, uint32_t chunk_size) {
  const uint64_t chunks = NumChunks(state_size, chunk_size);
  return std::max<uint64_t>(1, std::min(chunks, kMaxImageBytes / chunk_size));
}

absl::StatusOr<std::unique_ptr<SimContentImage>> SimContentImage::Create(uint64_t seed,
                                                                         uint64_t state_size,
                                                                         uint32_t chunk_size) {
  std::unique_ptr<SimContentImage> image(new SimContentImage());
  image->chunk_size_ = chunk_size;
  image->slots_ = Slots(state_size, chunk_size);
  const uint32_t last = ChunkLength(state_size, chunk_size, NumChunks(state_size, chunk_size) - 1);
  image->tail_length_ = last < chunk_size ? last : 0;
  image->fd_.Reset(::memfd_create("migmover-sim-image", MFD_CLOEXEC));
  if (!image->fd_) return ErrnoStatus("memfd_create(sim content image)", errno);
  // Slots are generated and written a batch at a time (about 1 MiB), so small chunks do not
  // cost a write each.
  const uint64_t per_batch = std::max<uint64_t>(1, (1u << 20) / chunk_size);
  std::vector<uint8_t> batch(per_batch * chunk_size);
  StreamDigest digest;
  auto xxh3 = [&digest](const uint8_t* p, uint32_t n) {
    digest.Reset();
    digest.Update(p, n);
    return digest.Value();
  };
  image->full_digest_.resize(image->slots_);
  if (image->tail_length_ != 0) image->tail_digest_.resize(image->slots_);
  for (uint64_t first = 0; first < image->slots_; first += per_batch) {
    const uint64_t n = std::min(per_batch, image->slots_ - first);
    for (uint64_t k = 0; k < n; ++k) {
      uint8_t* p = batch.data() + k * chunk_size;
      FillChunk(seed, first + k, 0, std::span<uint8_t>(p, chunk_size));
      image->full_digest_[first + k] = xxh3(p, chunk_size);
      if (image->tail_length_ != 0) image->tail_digest_[first + k] = xxh3(p, image->tail_length_);
    }
    const size_t bytes = n * chunk_size;
    size_t done = 0;
    while (done < bytes) {
      ssize_t w = ::pwrite(image->fd_.get(), batch.data() + done, bytes - done,
                           static_cast<off_t>(image->SlotOffset(first) + done));
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        return ErrnoStatus(absl::StrCat("pwrite(sim content image, slot ", first, ")"),
                           w < 0 ? errno : ENOSPC);
      }
      done += w;
    }
  }
  return image;
}

uint64_t SimContentImage::PayloadDigest(uint64_t slot, uint32_t length) const {
  return length == chunk_size_ ? full_digest_[slot] : tail_digest_[slot];
}

}  // namespace migmover::sim
