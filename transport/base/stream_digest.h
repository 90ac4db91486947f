// StreamDigest: the XXH3-64 of a byte stream fed in pieces, the one digest both ends of a
// migration stream (and the simulated device's records) compute. Uses libxxhash's runtime
// dispatch, so the widest vector unit the CPU has (SSE2, AVX2, AVX-512) does the work.
#ifndef MIGMOVER_TRANSPORT_BASE_STREAM_DIGEST_H_
#define MIGMOVER_TRANSPORT_BASE_STREAM_DIGEST_H_

#include <cstddef>
#include <cstdint>
#include <memory>

namespace migmover {

class StreamDigest {
 public:
  StreamDigest();
  ~StreamDigest();
  StreamDigest(const StreamDigest&) = delete;
  StreamDigest& operator=(const StreamDigest&) = delete;

  void Update(const void* data, size_t n);
  // Starts over: the digest of nothing, 0 bytes.
  void Reset();
  // The digest of everything so far (the stream may continue).
  uint64_t Value() const;
  uint64_t bytes() const { return bytes_; }

 private:
  struct State;
  std::unique_ptr<State> state_;
  uint64_t bytes_ = 0;
};

}  // namespace migmover

#endif  // MIGMOVER_TRANSPORT_BASE_STREAM_DIGEST_H_
