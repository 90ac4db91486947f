// Migration device states and feature sets, with the kernel's numeric values and names.
#ifndef MIGMOVER_DAEMON_DEVICE_MIG_STATE_H_
#define MIGMOVER_DAEMON_DEVICE_MIG_STATE_H_

#include <array>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace migmover {

// enum vfio_device_mig_state; the values are the uAPI's.
enum class MigState : uint32_t {
  kError = 0,
  kStop = 1,
  kRunning = 2,
  kStopCopy = 3,
  kResuming = 4,
  kRunningP2P = 5,
  kPreCopy = 6,
  kPreCopyP2P = 7,
};
inline constexpr int kNumMigStates = 8;

inline constexpr std::array<MigState, kNumMigStates> kAllMigStates = {
    MigState::kError,    MigState::kStop,       MigState::kRunning, MigState::kStopCopy,
    MigState::kResuming, MigState::kRunningP2P, MigState::kPreCopy, MigState::kPreCopyP2P};

// "RUNNING_P2P" etc. (the uAPI's names without the VFIO_DEVICE_STATE_ prefix).
const char* MigStateName(MigState state);
// A name for any raw value, "STATE(<n>)" when out of range.
std::string MigStateName(uint32_t raw);
// Parses a state name, case-insensitively ("running_p2p", "STOP_COPY"). InvalidArgument lists
// the valid names.
absl::StatusOr<MigState> ParseMigState(absl::string_view name);

// True for the three states that share one saving data fd.
bool InSavingGroup(MigState state);

// VFIO_MIGRATION_* flags (feature 1).
struct MigFeatures {
  static constexpr uint64_t kStopCopy = 1u << 0;
  static constexpr uint64_t kP2P = 1u << 1;
  static constexpr uint64_t kPreCopy = 1u << 2;

  uint64_t flags = 0;

  bool stop_copy() const { return flags & kStopCopy; }
  bool p2p() const { return flags & kP2P; }
  bool pre_copy() const { return flags & kPreCopy; }
  // Whether a device with these flags has `state` (the kernel's required-flags mask; ERROR is
  // never supported).
  bool Supports(MigState state) const;
  // "stop_copy,p2p,pre_copy"
  std::string ToString() const;
};

// Parses "stop_copy,p2p,pre_copy" (any order, case-insensitive). STOP_COPY is mandatory for a
// migration driver, so a set without it is InvalidArgument.
absl::StatusOr<MigFeatures> ParseMigFeatures(absl::string_view text);

// The four feature sets the kernel defines.
inline constexpr std::array<uint64_t, 4> kAllFeatureSets = {
    MigFeatures::kStopCopy,
    MigFeatures::kStopCopy | MigFeatures::kP2P,
    MigFeatures::kStopCopy | MigFeatures::kPreCopy,
    MigFeatures::kStopCopy | MigFeatures::kP2P | MigFeatures::kPreCopy,
};

}  // namespace migmover

#endif  // MIGMOVER_DAEMON_DEVICE_MIG_STATE_H_
