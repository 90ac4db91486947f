#include "daemon/device/fsm_path.h"

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "transport/base/errno_status.h"

namespace migmover {
namespace {

using S = MigState;
constexpr S E = S::kError;

// Next hop for every (current, target) assuming every optional state exists. Built on the two
// rules the kernel's table follows: take a shortest path, and never pass *through* PRE_COPY,
// PRE_COPY_P2P, STOP_COPY or RESUMING (they may only start or end a walk). ERROR marks the
// blocked arcs and the ERROR row/column. Indexed [current][target] by the uAPI values:
// ERROR, STOP, RUNNING, STOP_COPY, RESUMING, RUNNING_P2P, PRE_COPY, PRE_COPY_P2P.
constexpr S kNextHop[kNumMigStates][kNumMigStates] = {
    /* ERROR */ {E, E, E, E, E, E, E, E},
    /* STOP */
    {E, S::kStop, S::kRunningP2P, S::kStopCopy, S::kResuming, S::kRunningP2P, S::kRunningP2P,
     S::kRunningP2P},
    /* RUNNING */
    {E, S::kRunningP2P, S::kRunning, S::kRunningP2P, S::kRunningP2P, S::kRunningP2P, S::kPreCopy,
     S::kRunningP2P},
    /* STOP_COPY */
    {E, S::kStop, S::kStop, S::kStopCopy, S::kStop, S::kStop, E, E},
    /* RESUMING */
    {E, S::kStop, S::kStop, S::kStop, S::kResuming, S::kStop, S::kStop, S::kStop},
    /* RUNNING_P2P */
    {E, S::kStop, S::kRunning, S::kStop, S::kStop, S::kRunningP2P, S::kRunning, S::kPreCopyP2P},
    /* PRE_COPY */
    {E, S::kRunning, S::kRunning, S::kPreCopyP2P, S::kRunning, S::kRunning, S::kPreCopy,
     S::kPreCopyP2P},
    /* PRE_COPY_P2P */
    {E, S::kRunningP2P, S::kRunningP2P, S::kStopCopy, S::kRunningP2P, S::kRunningP2P, S::kPreCopy,
     S::kPreCopyP2P},
};

int Idx(S s) { return static_cast<int>(s); }

absl::Status Einval(absl::string_view why, S from, S to, MigFeatures f) {
  return ErrnoStatus(absl::StrCat("FSM ", MigStateName(from), "->", MigStateName(to),
                                  " with features ", f.ToString(), ": ", why),
                     EINVAL);
}

}  // namespace

std::string FsmPath::ToString() const {
  std::string out;
  for (size_t i = 0; i < size_; ++i) {
    if (i) out += " > ";
    out += MigStateName(states_[i]);
  }
  return out;
}

absl::StatusOr<FsmPath> FindFsmPath(MigFeatures features, MigState from, MigState to) {
  if (!features.Supports(from)) {
    return Einval("the device cannot be in the start state", from, to, features);
  }
  if (!features.Supports(to)) {
    return Einval("the target state is not one the device has", from, to, features);
  }
  if (from == S::kStopCopy && (to == S::kPreCopy || to == S::kPreCopyP2P)) {
    return Einval("blocked arc (kernels before the 2026 fix hang on it)", from, to, features);
  }
  FsmPath path;
  path.push_back(from);
  S cur = from;
  while (cur != to) {
    S next = kNextHop[Idx(cur)][Idx(to)];
    // Skip optional states the device lacks; ERROR (blocked) is checked first so the walk can
    // never spin on it.
    while (next != E && !features.Supports(next)) next = kNextHop[Idx(next)][Idx(to)];
    if (next == E || path.size() == FsmPath::kMaxStates) {
      return Einval("blocked arc", from, to, features);
    }
    path.push_back(next);
    cur = next;
  }
  return path;
}

bool ArcOpensDataFd(MigState from, MigState to) {
  return (from == S::kRunning && to == S::kPreCopy) ||
         (from == S::kRunningP2P && to == S::kPreCopyP2P) ||
         (from == S::kStop && to == S::kStopCopy) || (from == S::kStop && to == S::kResuming);
}

bool ArcEndsDataSession(MigState from, MigState to) {
  if (from == S::kResuming) return to != S::kResuming;
  return InSavingGroup(from) && !InSavingGroup(to);
}

bool PathOpensDataFd(const FsmPath& path) {
  return path.size() >= 2 && ArcOpensDataFd(path[path.size() - 2], path.back());
}

}  // namespace migmover
