// ReplayBuffer: which of a device stream's buffers still hold bytes the destination has not
// acknowledged (api/PEER_PROTOCOL.md, "Acknowledgements"), in stream order. A data fd cannot be
// rewound, so after a frame went out its buffer is the only copy of those bytes until the
// destination's ACK says they are in its device; only then may the buffer take new bytes.
//
// It holds no bytes itself, only the buffers' indices and their stream ranges: the frames stay
// where they were read (no copy). Its capacity is fixed at construction (no allocation after).
//
// Thread use: the stream's one pump at a time (SendStream's rule).
#ifndef MIGMOVER_TRANSPORT_STREAM_REPLAY_BUFFER_H_
#define MIGMOVER_TRANSPORT_STREAM_REPLAY_BUFFER_H_

#include <cstdint>
#include <vector>

#include "api/peer_wire.h"

namespace migmover::stream {

class ReplayBuffer {
 public:
  // Up to `capacity` frames; 0: off (a buffer is reused as soon as its frame went out).
  explicit ReplayBuffer(uint32_t capacity = 0);

  bool enabled() const { return !entries_.empty(); }
  uint32_t capacity() const { return static_cast<uint32_t>(entries_.size()); }
  uint32_t frames() const { return count_; }
  // Stream bytes held, from the first held frame's start to the last one's end.
  uint64_t bytes() const { return bytes_; }
  // Whether buffer `slot` holds a frame.
  bool Holds(uint32_t slot) const;

  // Buffer `slot` now holds the `len` stream bytes at `offset`, of `phase`, which must follow
  // the last ones held (the data fd is read in stream order; striped sends may complete out of
  // it). Returns false, holding nothing, when full or out of order.
  bool Hold(uint32_t slot, uint64_t offset, uint32_t len,
            wire::Phase phase = wire::Phase::kPreCopy);

  // The destination has every byte before `acked`: each frame that ends at or before it leaves,
  // oldest first, as `release(slot)` takes its buffer back. `release` returns false for a
  // buffer the kernel may still read (its send not complete): that frame and those after it
  // stay. Returns how many left.
  template <typename F>
  uint32_t Release(uint64_t acked, F release) {
    uint32_t n = 0;
    while (count_ > 0) {
      const Frame& e = entries_[head_];
      if (e.offset + e.len > acked || !release(e.slot)) break;
      bytes_ -= e.len;
      head_ = (head_ + 1) % capacity();
      --count_;
      ++n;
    }
    return n;
  }

  // A held frame, and what became of it.
  struct Frame {
    uint32_t slot = 0;
    uint32_t len = 0;
    uint64_t offset = 0;
    wire::Phase phase = wire::Phase::kPreCopy;  // A resend goes in the phase it was read in.
    bool digested = false;  // Its bytes are in the stream's digest (they went out once).
    bool counted = false;   // They are in the stream's progress (they went out whole once).
  };

  // The held frames, oldest first: `visit(const Frame&)`.
  template <typename F>
  void ForEach(F visit) const {
    for (uint32_t i = 0; i < count_; ++i) visit(entries_[(head_ + i) % capacity()]);
  }

  // Buffer `slot`'s frame is in the digest, or in the progress: a resend must not add it again.
  void MarkDigested(uint32_t slot);
  void MarkCounted(uint32_t slot);
  // The first byte held (`end` when none is).
  uint64_t first_offset(uint64_t end) const {
    return count_ > 0 ? entries_[head_].offset : end;
  }

  // Forgets every frame (their buffers are gone: a broken queue's pool).
  void Clear();

 private:
  Frame* Find(uint32_t slot);
  std::vector<Frame> entries_;
  uint32_t head_ = 0, count_ = 0;
  uint64_t bytes_ = 0;
};

}  // namespace migmover::stream

#endif  // MIGMOVER_TRANSPORT_STREAM_REPLAY_BUFFER_H_
