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
  const uint64_t chunks = NumChunks(state_size, chunk_size);
  const uint64_t slots = std::max<uint64_t>(1, std::min(chunks, kMaxImageBytes / chunk_size));
  return slots * chunk_size;
}

absl::StatusOr<std::unique_ptr<SimContentImage>> SimContentImage::Create(uint64_t seed,
                                                                         uint64_t state_size,
                                                                         uint32_t chunk_size) {
  std::unique_ptr<SimContentImage> image(new SimContentImage());
  image->chunk_size_ = chunk_size;
  image->slots_ = ImageBytes(state_size, chunk_size) / chunk_size;
  const uint32_t last = ChunkLength(state_size, chunk_size, NumChunks(state_size, chunk_size) - 1);
  image->tail_length_ = last < chunk_size ? last : 0;
  image->fd_.Reset(::memfd_create("migmover-sim-image", MFD_CLOEXEC));
  if (!image->fd_) return ErrnoStatus("memfd_create(sim content image)", errno);
  std::vector<uint8_t> buf(chunk_size);
  StreamDigest digest;
  auto xxh3 = [&digest, &buf](uint32_t n) {
    digest.Reset();
    digest.Update(buf.data(), n);
    return digest.Value();
  };
  image->full_digest_.resize(image->slots_);
  if (image->tail_length_ != 0) image->tail_digest_.resize(image->slots_);
  for (uint64_t slot = 0; slot < image->slots_; ++slot) {
    FillChunk(seed, slot, 0, std::span<uint8_t>(buf));
    image->full_digest_[slot] = xxh3(chunk_size);
    if (image->tail_length_ != 0) {
      image->tail_digest_[slot] = xxh3(image->tail_length_);
    }
    size_t done = 0;
    while (done < chunk_size) {
      ssize_t w = ::pwrite(image->fd_.get(), buf.data() + done, chunk_size - done,
                           static_cast<off_t>(image->SlotOffset(slot) + done));
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        return ErrnoStatus(absl::StrCat("pwrite(sim content image, slot ", slot, ")"),
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
