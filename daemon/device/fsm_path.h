// The kernel's rule for multi-step migration state changes (vfio_mig_get_next_state), for every
// feature set, so the daemon can walk a request one arc at a time and know where it stands when
// an arc fails.
#ifndef MIGMOVER_DAEMON_DEVICE_FSM_PATH_H_
#define MIGMOVER_DAEMON_DEVICE_FSM_PATH_H_

#include <array>
#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "daemon/device/mig_state.h"

namespace migmover {

// A walk through the FSM: the start state followed by every state the device passes through,
// ending at the target. A no-op request is the start state alone. Fixed storage: the longest
// walk the kernel defines has five states.
class FsmPath {
 public:
  static constexpr size_t kMaxStates = kNumMigStates;

  size_t size() const { return size_; }
  MigState operator[](size_t i) const { return states_[i]; }
  MigState front() const { return states_[0]; }
  MigState back() const { return states_[size_ - 1]; }
  const MigState* begin() const { return states_.data(); }
  const MigState* end() const { return states_.data() + size_; }
  // Number of arcs (single-step transitions) in the walk.
  size_t arcs() const { return size_ - 1; }

  void push_back(MigState s) { states_[size_++] = s; }

  // "RUNNING > RUNNING_P2P > STOP"
  std::string ToString() const;

 private:
  std::array<MigState, kMaxStates> states_{};
  size_t size_ = 0;
};

// The walk a device with `features` takes from `from` to `to`.
// InvalidArgument carrying EINVAL (see StatusErrno) when the kernel would refuse the request:
// `from` or `to` is not a state the device has (ERROR never is), or the request is one of the
// blocked arcs STOP_COPY -> PRE_COPY / PRE_COPY_P2P. Those two are refused here, before any
// ioctl, because kernels 6.2 up to the 2026 fix spin forever on them.
absl::StatusOr<FsmPath> FindFsmPath(MigFeatures features, MigState from, MigState to);

// True for the four arcs on which a SET returns a new data fd: RUNNING -> PRE_COPY,
// RUNNING_P2P -> PRE_COPY_P2P and STOP -> STOP_COPY (saving), STOP -> RESUMING (resuming).
bool ArcOpensDataFd(MigState from, MigState to);

// True for the arcs that end the current data session (its fd becomes dead): leaving the saving
// group (STOP_COPY -> STOP, PRE_COPY -> RUNNING, PRE_COPY_P2P -> RUNNING_P2P) or RESUMING -> STOP.
bool ArcEndsDataSession(MigState from, MigState to);

// True if a walk ends on an arc that opens a data fd (so the SET returns one).
bool PathOpensDataFd(const FsmPath& path);

}  // namespace migmover

#endif  // MIGMOVER_DAEMON_DEVICE_FSM_PATH_H_
