#include "daemon/device/mig_state.h"

#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "daemon/device/vfio_uapi.h"

namespace migmover {

static_assert(static_cast<uint32_t>(MigState::kError) == VFIO_DEVICE_STATE_ERROR);
static_assert(static_cast<uint32_t>(MigState::kStop) == VFIO_DEVICE_STATE_STOP);
static_assert(static_cast<uint32_t>(MigState::kRunning) == VFIO_DEVICE_STATE_RUNNING);
static_assert(static_cast<uint32_t>(MigState::kStopCopy) == VFIO_DEVICE_STATE_STOP_COPY);
static_assert(static_cast<uint32_t>(MigState::kResuming) == VFIO_DEVICE_STATE_RESUMING);
static_assert(static_cast<uint32_t>(MigState::kRunningP2P) == VFIO_DEVICE_STATE_RUNNING_P2P);
static_assert(static_cast<uint32_t>(MigState::kPreCopy) == VFIO_DEVICE_STATE_PRE_COPY);
static_assert(static_cast<uint32_t>(MigState::kPreCopyP2P) == VFIO_DEVICE_STATE_PRE_COPY_P2P);
static_assert(kNumMigStates == VFIO_DEVICE_STATE_NR);
static_assert(MigFeatures::kStopCopy == VFIO_MIGRATION_STOP_COPY);
static_assert(MigFeatures::kP2P == VFIO_MIGRATION_P2P);
static_assert(MigFeatures::kPreCopy == VFIO_MIGRATION_PRE_COPY);

const char* MigStateName(MigState state) {
  switch (state) {
    case MigState::kError:
      return "ERROR";
    case MigState::kStop:
      return "STOP";
    case MigState::kRunning:
      return "RUNNING";
    case MigState::kStopCopy:
      return "STOP_COPY";
    case MigState::kResuming:
      return "RESUMING";
    case MigState::kRunningP2P:
      return "RUNNING_P2P";
    case MigState::kPreCopy:
      return "PRE_COPY";
    case MigState::kPreCopyP2P:
      return "PRE_COPY_P2P";
  }
  return "?";
}

std::string MigStateName(uint32_t raw) {
  if (raw < kNumMigStates) return MigStateName(static_cast<MigState>(raw));
  return absl::StrCat("STATE(", raw, ")");
}

absl::StatusOr<MigState> ParseMigState(absl::string_view name) {
  std::string upper = absl::AsciiStrToUpper(name);
  for (MigState s : kAllMigStates) {
    if (upper == MigStateName(s)) return s;
  }
  std::vector<std::string> names;
  for (MigState s : kAllMigStates) names.push_back(MigStateName(s));
  return absl::InvalidArgumentError(absl::StrCat("unknown device state '", name,
                                                 "'; expected one of ",
                                                 absl::StrJoin(names, ", ")));
}

bool InSavingGroup(MigState state) {
  return state == MigState::kPreCopy || state == MigState::kPreCopyP2P ||
         state == MigState::kStopCopy;
}

namespace {
uint64_t RequiredFlags(MigState state) {
  switch (state) {
    case MigState::kStop:
    case MigState::kRunning:
    case MigState::kStopCopy:
    case MigState::kResuming:
      return MigFeatures::kStopCopy;
    case MigState::kRunningP2P:
      return MigFeatures::kStopCopy | MigFeatures::kP2P;
    case MigState::kPreCopy:
      return MigFeatures::kStopCopy | MigFeatures::kPreCopy;
    case MigState::kPreCopyP2P:
      return MigFeatures::kStopCopy | MigFeatures::kP2P | MigFeatures::kPreCopy;
    case MigState::kError:
      break;
  }
  return ~uint64_t{0};  // ERROR: never supported.
}
}  // namespace

bool MigFeatures::Supports(MigState state) const {
  uint64_t required = RequiredFlags(state);
  return (flags & required) == required;
}

std::string MigFeatures::ToString() const {
  std::vector<std::string> parts;
  if (stop_copy()) parts.push_back("stop_copy");
  if (p2p()) parts.push_back("p2p");
  if (pre_copy()) parts.push_back("pre_copy");
  uint64_t unknown = flags & ~(kStopCopy | kP2P | kPreCopy);
  if (unknown) parts.push_back(absl::StrCat("0x", absl::Hex(unknown)));
  if (parts.empty()) return "none";
  return absl::StrJoin(parts, ",");
}

absl::StatusOr<MigFeatures> ParseMigFeatures(absl::string_view text) {
  MigFeatures f;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    std::string p = absl::AsciiStrToLower(absl::StripAsciiWhitespace(part));
    if (p == "stop_copy") {
      f.flags |= MigFeatures::kStopCopy;
    } else if (p == "p2p") {
      f.flags |= MigFeatures::kP2P;
    } else if (p == "pre_copy") {
      f.flags |= MigFeatures::kPreCopy;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown migration feature '", p, "'; expected stop_copy, p2p, pre_copy"));
    }
  }
  if (!f.stop_copy()) {
    return absl::InvalidArgumentError(
        absl::StrCat("feature set '", text, "' lacks stop_copy, which every migration driver has"));
  }
  return f;
}

}  // namespace migmover
