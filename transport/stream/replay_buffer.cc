#include "transport/stream/replay_buffer.h"

namespace migmover::stream {

ReplayBuffer::ReplayBuffer(uint32_t capacity) : entries_(capacity) {}

bool ReplayBuffer::Holds(uint32_t slot) const {
  for (uint32_t i = 0; i < count_; ++i) {
    if (entries_[(head_ + i) % capacity()].slot == slot) return true;
  }
  return false;
}

bool ReplayBuffer::Hold(uint32_t slot, uint64_t offset, uint32_t len, wire::Phase phase) {
  if (count_ == capacity()) return false;
  if (count_ > 0) {
    const Frame& last = entries_[(head_ + count_ - 1) % capacity()];
    if (last.offset + last.len != offset) return false;
  }
  entries_[(head_ + count_) % capacity()] = Frame{slot, len, offset, phase, false, false};
  ++count_;
  bytes_ += len;
  return true;
}

ReplayBuffer::Frame* ReplayBuffer::Find(uint32_t slot) {
  for (uint32_t i = 0; i < count_; ++i) {
    Frame& e = entries_[(head_ + i) % capacity()];
    if (e.slot == slot) return &e;
  }
  return nullptr;
}

void ReplayBuffer::MarkDigested(uint32_t slot) {
  if (Frame* f = Find(slot)) f->digested = true;
}

void ReplayBuffer::MarkCounted(uint32_t slot) {
  if (Frame* f = Find(slot)) f->counted = true;
}

void ReplayBuffer::Clear() {
  head_ = count_ = 0;
  bytes_ = 0;
}

}  // namespace migmover::stream
