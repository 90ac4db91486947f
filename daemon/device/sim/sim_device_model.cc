#include "daemon/device/sim/sim_device_model.h"

#include <algorithm>

#include "absl/time/clock.h"
#include "daemon/device/sim/sim_stream.h"

namespace migmover::sim {

SimDeviceModel::SimDeviceModel(const SimDeviceSpec& spec)
    : spec_(spec),
      num_chunks_(NumChunks(spec.state_size, spec.chunk_size)),
      initial_chunks_(std::min<uint64_t>(
          num_chunks_, spec.initial_bytes / spec.chunk_size +
                           (spec.initial_bytes % spec.chunk_size ? 1 : 0))),
      seed_(spec.seed),
      gen_(num_chunks_, 0),
      sent_(num_chunks_, false),
      dirty_(num_chunks_, false),
      last_tick_(absl::Now()),
      rng_(spec.seed * 0x9e3779b97f4a7c15ULL + 1) {}

uint64_t SimDeviceModel::record_bytes() const {
  return sizeof(RecordHeader) + spec_.chunk_size;
}

void SimDeviceModel::TickLocked() {
  absl::Time now = absl::Now();
  if (running_ && spec_.dirty_rate > 0) {
    dirty_budget_ += absl::ToDoubleSeconds(now - last_tick_) * static_cast<double>(spec_.dirty_rate);
    // Bound the work of one tick: a long idle gap dirties at most the whole state twice.
    dirty_budget_ = std::min(dirty_budget_, 2.0 * static_cast<double>(spec_.state_size));
    while (dirty_budget_ >= spec_.chunk_size) {
      dirty_budget_ -= spec_.chunk_size;
      rng_ ^= rng_ << 13;
      rng_ ^= rng_ >> 7;
      rng_ ^= rng_ << 17;
      uint64_t c = rng_ % num_chunks_;
      ++gen_[c];
      if (sent_[c] && !dirty_[c]) {
        dirty_[c] = true;
        dirty_queue_.push_back(c);
      }
    }
  }
  last_tick_ = now;
}

void SimDeviceModel::SetRunning(bool running) {
  absl::MutexLock l(&mu_);
  TickLocked();
  running_ = running;
}

void SimDeviceModel::BeginSaving() {
  absl::MutexLock l(&mu_);
  TickLocked();
  std::fill(sent_.begin(), sent_.end(), false);
  std::fill(dirty_.begin(), dirty_.end(), false);
  dirty_queue_.clear();
  cursor_ = 0;
  emitted_ = sizeof(RecordHeader) + sizeof(BeginPayload);
  stop_copy_ = false;
}

void SimDeviceModel::EnterStopCopy() {
  absl::MutexLock l(&mu_);
  TickLocked();
  running_ = false;
  stop_copy_ = true;
}

NextRecord SimDeviceModel::Next() {
  absl::MutexLock l(&mu_);
  TickLocked();
  auto take = [&](uint64_t c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    sent_[c] = true;
    emitted_ += sizeof(RecordHeader) + ChunkLength(spec_.state_size, spec_.chunk_size, c);
    return NextRecord{NextRecord::kData, c, gen_[c]};
  };
  if (cursor_ < initial_chunks_) return take(cursor_++);
  if (!dirty_queue_.empty()) {
    uint64_t c = dirty_queue_.front();
    dirty_queue_.pop_front();
    dirty_[c] = false;
    return take(c);
  }
  if (!stop_copy_) return NextRecord{NextRecord::kWait};
  if (cursor_ < num_chunks_) return take(cursor_++);
  emitted_ += sizeof(RecordHeader) + sizeof(EndPayload);
  return NextRecord{NextRecord::kEnd};
}

void SimDeviceModel::Progress(uint64_t* emitted_bytes, uint64_t* unpicked_bytes) {
  absl::MutexLock l(&mu_);
  TickLocked();
  uint64_t records = (cursor_ < initial_chunks_ ? initial_chunks_ - cursor_ : 0) +
                     dirty_queue_.size();
  *emitted_bytes = emitted_;
  *unpicked_bytes = records * record_bytes();
}

uint64_t SimDeviceModel::StopCopyEstimate() {
  absl::MutexLock l(&mu_);
  TickLocked();
  uint64_t records = (num_chunks_ - std::min(cursor_, num_chunks_)) + dirty_queue_.size();
  return records * record_bytes() + sizeof(RecordHeader) + sizeof(EndPayload) +
         (cursor_ == 0 ? sizeof(RecordHeader) + sizeof(BeginPayload) : 0);
}

void SimDeviceModel::Reset() {
  absl::MutexLock l(&mu_);
  seed_ = spec_.seed;
  gen_.assign(num_chunks_, 0);
  sent_.assign(num_chunks_, false);
  dirty_.assign(num_chunks_, false);
  dirty_queue_.clear();
  cursor_ = 0;
  emitted_ = 0;
  stop_copy_ = false;
}

void SimDeviceModel::Load(uint64_t seed, std::vector<uint32_t> generations) {
  absl::MutexLock l(&mu_);
  seed_ = seed;
  gen_ = std::move(generations);
}

std::vector<uint32_t> SimDeviceModel::generations() const {
  absl::MutexLock l(&mu_);
  return gen_;
}

uint64_t SimDeviceModel::seed() const {
  absl::MutexLock l(&mu_);
  return seed_;
}

uint64_t SimDeviceModel::state_digest() const {
  absl::MutexLock l(&mu_);
  return StateDigest(gen_);
}

uint64_t SimDeviceModel::content_digest() const {
  absl::MutexLock l(&mu_);
  return StateDigest(gen_) ^ (seed_ * 0x9e3779b97f4a7c15ULL);
}

}  // namespace migmover::sim
