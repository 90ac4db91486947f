// The simulated device's migration stream: a self-describing record format in the spirit of
// mlx5's (a header per record), so the resuming side can check that exactly the bytes the saving
// side produced arrived, in order, without sharing anything else with it.
//
//   BEGIN  {seed, state_size, chunk_size}
//   DATA   chunk index + generation, payload = SimChunkContent(seed, chunk, generation)
//   ...    (a chunk is re-sent with a newer generation when it was dirtied after it was sent)
//   END    {records, stream_bytes, stream_digest (XXH3-64 of every byte before END),
//           state_digest (XXH3-64 of the final generation of every chunk)}
// With image content (BEGIN's flags has kBeginImageContent: the benchmark device, see
// sim_content_image.h) a DATA payload is one of the device's prepared slots, which the resuming
// side cannot regenerate cheaply, and the stream digest is over the BEGIN record's bytes, then
// each later record's header followed by the XXH3-64 of its payload (8 bytes), so the saving
// side hashes no payload on the path (its slots' digests are prepared) and the resuming side
// hashes each payload once, as it passes, without comparing it to anything.
// All integers are little-endian (host order on the x86-64 hosts this runs on).
#ifndef MIGMOVER_DAEMON_DEVICE_SIM_SIM_STREAM_H_
#define MIGMOVER_DAEMON_DEVICE_SIM_SIM_STREAM_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "transport/base/stream_digest.h"

namespace migmover::sim {

inline constexpr uint32_t kRecordMagic = 0x52534d4d;  // "MMSR"
inline constexpr uint16_t kRecordVersion = 1;
inline constexpr uint32_t kMaxChunkSize = 1 << 20;
inline constexpr uint64_t kMaxStateSize = uint64_t{1} << 40;

enum class RecordType : uint16_t { kBegin = 1, kData = 2, kEnd = 3 };

struct RecordHeader {
  uint32_t magic;
  uint16_t type;
  uint16_t version;
  uint32_t length;  // Payload bytes after this header.
  uint32_t generation;
  uint64_t seq;     // 0 for BEGIN, then +1 per record.
  uint64_t chunk;   // DATA: chunk index.
};
static_assert(sizeof(RecordHeader) == 32);

inline constexpr uint32_t kBeginImageContent = 1;

struct BeginPayload {
  uint64_t seed;
  uint64_t state_size;
  uint32_t chunk_size;
  uint32_t flags;  // kBeginImageContent; other bits must be 0.
};
static_assert(sizeof(BeginPayload) == 24);

struct EndPayload {
  uint64_t records;
  uint64_t stream_bytes;
  uint64_t stream_digest;
  uint64_t state_digest;
};
static_assert(sizeof(EndPayload) == 32);

// Bytes in chunk `chunk` of a state of `state_size` split into `chunk_size` pieces.
uint32_t ChunkLength(uint64_t state_size, uint32_t chunk_size, uint64_t chunk);
uint64_t NumChunks(uint64_t state_size, uint32_t chunk_size);

// Deterministic content of one chunk at one generation. Cheap enough to generate and check at
// memory speed.
void FillChunk(uint64_t seed, uint64_t chunk, uint32_t generation, std::span<uint8_t> out);

// XXH3-64 over the generation of every chunk.
uint64_t StateDigest(std::span<const uint32_t> generations);

// Parses and checks a resuming stream as it arrives, in pieces of any size. Holds the state the
// stream builds (chunk generations) and never buffers more than one chunk.
class StreamVerifier {
 public:
  // `expected_state_size`: the destination device's state size (a stream for a different device
  // is refused at BEGIN, as a real driver refuses an incompatible image).
  explicit StreamVerifier(uint64_t expected_state_size);

  // Consumes the next bytes. Returns the first error (and keeps returning it): bad magic,
  // version, sequence gap, oversize or unknown record, payload differing from the content the
  // record names, bytes after END, or END totals/digests that disagree.
  absl::Status Consume(std::span<const uint8_t> bytes);

  // OK only if a complete, consistent stream (BEGIN .. END) was consumed and nothing more.
  absl::Status Finish() const;

  const std::vector<uint32_t>& generations() const { return generations_; }
  uint64_t seed() const { return seed_; }
  uint64_t bytes_consumed() const { return stream_bytes_ + tail_bytes_; }

 private:
  absl::Status Fail(absl::Status s);
  absl::Status OnHeader();
  absl::Status OnPayloadComplete();

  const uint64_t expected_state_size_;
  absl::Status error_;
  bool begun_ = false;
  bool ended_ = false;
  uint64_t seed_ = 0;
  uint64_t state_size_ = 0;
  uint32_t chunk_size_ = 0;
  uint64_t next_seq_ = 0;
  std::vector<uint32_t> generations_;

  RecordHeader header_{};
  size_t header_have_ = 0;
  size_t payload_have_ = 0;
  bool image_ = false;             // BEGIN said kBeginImageContent.
  std::vector<uint8_t> expected_;  // Checked DATA: the payload the header names; BEGIN/END: received.
  StreamDigest digest_;            // The stream digest, over everything before the END header.
  StreamDigest payload_digest_;    // Image content: the current DATA record's payload.
  uint64_t stream_bytes_ = 0;      // Bytes before the END header.
  uint64_t tail_bytes_ = 0;        // END header + payload and anything after.
  bool in_end_ = false;
};

}  // namespace migmover::sim

#endif  // MIGMOVER_DAEMON_DEVICE_SIM_SIM_STREAM_H_
