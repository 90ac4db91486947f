#include "daemon/device/sim/sim_stream.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "xxhash.h"

namespace migmover::sim {

uint64_t NumChunks(uint64_t state_size, uint32_t chunk_size) {
  return (state_size + chunk_size - 1) / chunk_size;
}

uint32_t ChunkLength(uint64_t state_size, uint32_t chunk_size, uint64_t chunk) {
  uint64_t start = chunk * chunk_size;
  if (start >= state_size) return 0;
  uint64_t left = state_size - start;
  return left < chunk_size ? static_cast<uint32_t>(left) : chunk_size;
}

namespace {
uint64_t Mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}
}  // namespace

void FillChunk(uint64_t seed, uint64_t chunk, uint32_t generation, std::span<uint8_t> out) {
  // An arithmetic sequence per chunk: distinct for every (seed, chunk, generation), and the loop
  // vectorizes, so content never bounds the data plane.
  uint64_t base = Mix64(seed ^ Mix64(chunk * 0x100000001b3ULL + generation));
  const uint64_t step = 0x9e3779b97f4a7c15ULL;
  size_t words = out.size() / 8;
  uint64_t* w = reinterpret_cast<uint64_t*>(out.data());
  if (reinterpret_cast<uintptr_t>(out.data()) % alignof(uint64_t) == 0) {
    for (size_t i = 0; i < words; ++i) w[i] = base + i * step;
  } else {
    for (size_t i = 0; i < words; ++i) {
      uint64_t v = base + i * step;
      std::memcpy(out.data() + i * 8, &v, 8);
    }
  }
  uint64_t tail = base + words * step;
  for (size_t i = words * 8; i < out.size(); ++i) {
    out[i] = static_cast<uint8_t>(tail >> (8 * (i % 8)));
  }
}

uint64_t StateDigest(std::span<const uint32_t> generations) {
  return XXH3_64bits(generations.data(), generations.size_bytes());
}

StreamVerifier::StreamVerifier(uint64_t expected_state_size)
    : expected_state_size_(expected_state_size) {}

absl::Status StreamVerifier::Fail(absl::Status s) {
  if (error_.ok()) error_ = std::move(s);
  return error_;
}

absl::Status StreamVerifier::OnHeader() {
  const RecordHeader& h = header_;
  const uint64_t at = bytes_consumed();
  if (h.magic != kRecordMagic) {
    return Fail(absl::DataLossError(
        absl::StrCat("record ", next_seq_, " at stream byte ", at, ": bad magic 0x",
                     absl::Hex(h.magic))));
  }
  if (h.version != kRecordVersion) {
    return Fail(absl::DataLossError(absl::StrCat("record ", next_seq_, ": version ", h.version,
                                                 ", expected ", kRecordVersion)));
  }
  if (h.seq != next_seq_) {
    return Fail(absl::DataLossError(absl::StrCat("record sequence gap: got ", h.seq,
                                                 ", expected ", next_seq_)));
  }
  const auto type = static_cast<RecordType>(h.type);
  if (!begun_ && type != RecordType::kBegin) {
    return Fail(absl::DataLossError("stream does not start with a BEGIN record"));
  }
  switch (type) {
    case RecordType::kBegin:
      if (begun_) return Fail(absl::DataLossError("second BEGIN record"));
      if (h.length != sizeof(BeginPayload)) {
        return Fail(absl::DataLossError(absl::StrCat("BEGIN length ", h.length)));
      }
      break;
    case RecordType::kData: {
      if (h.chunk >= generations_.size()) {
        return Fail(absl::DataLossError(absl::StrCat("DATA record ", h.seq, ": chunk ", h.chunk,
                                                     " beyond ", generations_.size())));
      }
      uint32_t want = ChunkLength(state_size_, chunk_size_, h.chunk);
      if (h.length != want) {
        return Fail(absl::DataLossError(absl::StrCat("DATA record ", h.seq, ": length ",
                                                     h.length, ", chunk holds ", want)));
      }
      break;
    }
    case RecordType::kEnd:
      if (h.length != sizeof(EndPayload)) {
        return Fail(absl::DataLossError(absl::StrCat("END length ", h.length)));
      }
      in_end_ = true;
      break;
    default:
      return Fail(absl::DataLossError(absl::StrCat("record ", h.seq, ": unknown type ", h.type)));
  }
  if (type == RecordType::kData && image_) {
    payload_digest_.Reset();
  } else {
    expected_.resize(h.length);
    if (type == RecordType::kData) {
      FillChunk(seed_, h.chunk, h.generation, std::span<uint8_t>(expected_));
    }
  }
  return absl::OkStatus();
}

absl::Status StreamVerifier::OnPayloadComplete() {
  const auto type = static_cast<RecordType>(header_.type);
  if (type == RecordType::kBegin) {
    BeginPayload b;
    std::memcpy(&b, expected_.data(), sizeof(b));
    if (b.chunk_size == 0 || b.chunk_size > kMaxChunkSize || b.state_size == 0 ||
        b.state_size > kMaxStateSize) {
      return Fail(absl::DataLossError(absl::StrCat("BEGIN: chunk size ", b.chunk_size,
                                                   ", state size ", b.state_size, " out of range")));
    }
    if ((b.flags & ~kBeginImageContent) != 0) {
      return Fail(absl::DataLossError(absl::StrCat("BEGIN: unknown flags 0x", absl::Hex(b.flags))));
    }
    if (b.state_size != expected_state_size_) {
      return Fail(absl::FailedPreconditionError(
          absl::StrCat("stream is for a device with ", b.state_size,
                       " bytes of state; this device has ", expected_state_size_)));
    }
    begun_ = true;
    image_ = (b.flags & kBeginImageContent) != 0;
    seed_ = b.seed;
    state_size_ = b.state_size;
    chunk_size_ = b.chunk_size;
    generations_.assign(NumChunks(state_size_, chunk_size_), 0);
  } else if (type == RecordType::kData) {
    if (image_) {
      const uint64_t d = payload_digest_.Value();
      digest_.Update(&d, sizeof(d));
    }
    generations_[header_.chunk] = header_.generation;
  } else {
    EndPayload e;
    std::memcpy(&e, expected_.data(), sizeof(e));
    if (e.records != header_.seq) {
      return Fail(absl::DataLossError(absl::StrCat("END counts ", e.records, " records, ",
                                                   header_.seq, " arrived")));
    }
    if (e.stream_bytes != stream_bytes_) {
      return Fail(absl::DataLossError(absl::StrCat("END counts ", e.stream_bytes,
                                                   " stream bytes, ", stream_bytes_,
                                                   " arrived")));
    }
    if (e.stream_digest != digest_.Value()) {
      return Fail(absl::DataLossError("stream digest mismatch: the bytes that arrived differ "
                                      "from the bytes the source produced"));
    }
    if (e.state_digest != StateDigest(generations_)) {
      return Fail(absl::DataLossError(
          "state digest mismatch: some chunk is not at its final generation"));
    }
    ended_ = true;
  }
  ++next_seq_;
  header_have_ = 0;
  payload_have_ = 0;
  return absl::OkStatus();
}

absl::Status StreamVerifier::Consume(std::span<const uint8_t> bytes) {
  if (!error_.ok()) return error_;
  while (!bytes.empty()) {
    if (ended_) {
      return Fail(absl::DataLossError(
          absl::StrCat(bytes.size(), " bytes after the END record")));
    }
    if (header_have_ < sizeof(RecordHeader)) {
      size_t n = std::min(bytes.size(), sizeof(RecordHeader) - header_have_);
      std::memcpy(reinterpret_cast<uint8_t*>(&header_) + header_have_, bytes.data(), n);
      header_have_ += n;
      bytes = bytes.subspan(n);
      if (header_have_ < sizeof(RecordHeader)) continue;
      // The END record is not part of the digest it carries.
      if (static_cast<RecordType>(header_.type) == RecordType::kEnd) {
        tail_bytes_ += sizeof(RecordHeader);
      } else {
        digest_.Update(&header_, sizeof(RecordHeader));
        stream_bytes_ += sizeof(RecordHeader);
      }
      if (absl::Status s = OnHeader(); !s.ok()) return s;
      if (header_.length == 0) {
        if (absl::Status s = OnPayloadComplete(); !s.ok()) return s;
      }
      continue;
    }
    size_t n = std::min<size_t>(bytes.size(), header_.length - payload_have_);
    const auto type = static_cast<RecordType>(header_.type);
    if (type == RecordType::kData && image_) {
      payload_digest_.Update(bytes.data(), n);
    } else if (type == RecordType::kData) {
      if (std::memcmp(expected_.data() + payload_have_, bytes.data(), n) != 0) {
        return Fail(absl::DataLossError(absl::StrCat(
            "DATA record ", header_.seq, " (chunk ", header_.chunk, " generation ",
            header_.generation, "): payload differs from the device's content")));
      }
    } else {
      std::memcpy(expected_.data() + payload_have_, bytes.data(), n);
    }
    if (type == RecordType::kEnd) {
      tail_bytes_ += n;
    } else {
      if (type != RecordType::kData || !image_) digest_.Update(bytes.data(), n);
      stream_bytes_ += n;
    }
    payload_have_ += n;
    bytes = bytes.subspan(n);
    if (payload_have_ == header_.length) {
      if (absl::Status s = OnPayloadComplete(); !s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

absl::Status StreamVerifier::Finish() const {
  if (!error_.ok()) return error_;
  if (!begun_) return absl::DataLossError("no stream arrived (no BEGIN record)");
  if (!ended_) {
    return absl::DataLossError(absl::StrCat("stream incomplete: ", bytes_consumed(),
                                            " bytes arrived, no END record"));
  }
  return absl::OkStatus();
}

}  // namespace migmover::sim
