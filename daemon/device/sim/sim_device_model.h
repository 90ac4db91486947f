// SimDeviceModel: the simulated device's internal state: chunk generations, what a saving
// session has sent, and which sent chunks the running device dirtied since. Thread-safe.
#ifndef MIGMOVER_DAEMON_DEVICE_SIM_SIM_DEVICE_MODEL_H_
#define MIGMOVER_DAEMON_DEVICE_SIM_SIM_DEVICE_MODEL_H_

#include <cstdint>
#include <deque>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "daemon/device/sim/sim_device_spec.h"

namespace migmover::sim {

// What a saving session should emit next.
struct NextRecord {
  enum Kind { kData, kWait, kEnd } kind = kWait;
  uint64_t chunk = 0;
  uint32_t generation = 0;
};

class SimDeviceModel {
 public:
  explicit SimDeviceModel(const SimDeviceSpec& spec);

  const SimDeviceSpec& spec() const { return spec_; }
  uint64_t num_chunks() const { return num_chunks_; }
  // Bytes of one DATA record (header + payload) of a full chunk.
  uint64_t record_bytes() const;

  // The device runs (and dirties state) in RUNNING, RUNNING_P2P and the PRE_COPY states.
  void SetRunning(bool running);

  // Starts tracking for a new saving stream: nothing sent, nothing dirty.
  void BeginSaving();
  // Final phase: stop dirtying; everything unsent or dirty must go out, then END.
  void EnterStopCopy();
  // Picks the next record for the saving stream (advancing the dirty clock first).
  NextRecord Next();
  // Bytes handed to the stream so far (BEGIN and every record Next() returned), and an estimate
  // of the bytes still to come before the stream would be drained (records not yet picked),
  // taken together under the lock so that a record in flight is counted exactly once.
  void Progress(uint64_t* emitted_bytes, uint64_t* unpicked_bytes);
  uint64_t initial_chunks() const { return initial_chunks_; }
  // Bytes STOP_COPY would still stream from now (records not yet emitted + END).
  uint64_t StopCopyEstimate();

  // VFIO_DEVICE_RESET: back to the state the device was made with; nothing migrated remains.
  void Reset();
  // Replaces the state with a resumed one (RESUMING -> STOP succeeded).
  void Load(uint64_t seed, std::vector<uint32_t> generations);
  std::vector<uint32_t> generations() const;
  uint64_t seed() const;
  // XXH3 over the generations: equal on both sides after a faithful migration.
  uint64_t state_digest() const;
  // The whole content, seed included: equal only for the same device state (a blank or reset
  // device of the same size differs from a migrated one even where no chunk was dirtied).
  uint64_t content_digest() const;

 private:
  void TickLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const SimDeviceSpec spec_;
  const uint64_t num_chunks_;
  const uint64_t initial_chunks_;

  mutable absl::Mutex mu_;
  uint64_t seed_ ABSL_GUARDED_BY(mu_);
  std::vector<uint32_t> gen_ ABSL_GUARDED_BY(mu_);
  std::vector<bool> sent_ ABSL_GUARDED_BY(mu_);
  std::vector<bool> dirty_ ABSL_GUARDED_BY(mu_);
  std::deque<uint64_t> dirty_queue_ ABSL_GUARDED_BY(mu_);
  uint64_t cursor_ ABSL_GUARDED_BY(mu_) = 0;  // Next never-sent chunk.
  uint64_t emitted_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_copy_ ABSL_GUARDED_BY(mu_) = false;
  bool running_ ABSL_GUARDED_BY(mu_) = true;
  absl::Time last_tick_ ABSL_GUARDED_BY(mu_);
  double dirty_budget_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t rng_ ABSL_GUARDED_BY(mu_);
};

}  // namespace migmover::sim

#endif  // MIGMOVER_DAEMON_DEVICE_SIM_SIM_DEVICE_MODEL_H_
