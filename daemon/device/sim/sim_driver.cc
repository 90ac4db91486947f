#include "daemon/device/sim/sim_driver.h"

#include <atomic>
#include <sys/mman.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "daemon/device/fsm_path.h"
#include "daemon/device/vfio_uapi.h"
#include "transport/base/errno_status.h"
#include "transport/base/status_macros.h"

namespace migmover::sim {
namespace {

bool Runs(MigState s) {
  return s == MigState::kRunning || s == MigState::kRunningP2P || s == MigState::kPreCopy ||
         s == MigState::kPreCopyP2P;
}

}  // namespace

absl::StatusOr<std::shared_ptr<SimulatedDriver>> SimulatedDriver::Create(
    const SimDeviceSpec& spec) {
  RETURN_IF_ERROR(spec.Validate());
  std::shared_ptr<SimulatedDriver> driver(new SimulatedDriver(spec));
  if (spec.content == SimDeviceSpec::Content::kImage) {
    ASSIGN_OR_RETURN(driver->image_,
                     SimContentImage::Create(spec.seed, spec.state_size, spec.chunk_size));
  }
  return driver;
}

SimulatedDriver::~SimulatedDriver() {
  absl::MutexLock l(&mu_);
  EndSessions();
}

absl::StatusOr<UniqueFd> SimulatedDriver::OpenDeviceFd() {
  UniqueFd fd(::memfd_create("migmover-simulated-vfio-device", MFD_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus("memfd_create(simulated device)", errno);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus("fstat(simulated device)", errno);
  absl::MutexLock l(&mu_);
  device_dev_ = st.st_dev;
  device_ino_ = st.st_ino;
  return fd;
}

bool SimulatedDriver::IsDeviceFd(int fd) const {
  struct stat st;
  return ::fstat(fd, &st) == 0 && st.st_dev == device_dev_ && st.st_ino == device_ino_;
}

MigState SimulatedDriver::state() const {
  absl::MutexLock l(&mu_);
  return state_;
}

int SimulatedDriver::Ioctl(int fd, unsigned long request, void* arg) {
  if (IsDeviceFd(fd)) {
    if (request == VFIO_DEVICE_FEATURE) return Feature(arg);
    if (request == VFIO_DEVICE_RESET) {
      absl::MutexLock l(&mu_);
      EndSessions();
      state_ = MigState::kRunning;
      model_.Reset();
      model_.SetRunning(true);
      return 0;
    }
    return -ENOTTY;
  }
  if (request == VFIO_MIG_GET_PRECOPY_INFO) return Precopy(fd, arg);
  return -ENOTTY;
}

// The kernel's envelope checks (vfio_ioctl_device_feature + vfio_check_feature), then the
// migration features.
int SimulatedDriver::Feature(void* arg) {
  auto* buf = static_cast<VfioFeatureBuffer*>(arg);
  constexpr uint32_t kKnown = VFIO_DEVICE_FEATURE_MASK | VFIO_DEVICE_FEATURE_GET |
                              VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_PROBE;
  const uint32_t argsz = buf->argsz, flags = buf->flags;
  if (argsz < sizeof(vfio_device_feature)) return -EINVAL;
  if (flags & ~kKnown) return -EINVAL;
  const bool get = flags & VFIO_DEVICE_FEATURE_GET, set = flags & VFIO_DEVICE_FEATURE_SET,
             probe = flags & VFIO_DEVICE_FEATURE_PROBE;
  if (!probe && get && set) return -EINVAL;
  uint32_t supported;
  const uint32_t id = flags & VFIO_DEVICE_FEATURE_MASK;
  switch (id) {
    case VFIO_DEVICE_FEATURE_MIG_DATA_SIZE:
      if (!model_.spec().data_size) return -ENOTTY;
      supported = VFIO_DEVICE_FEATURE_GET;
      break;
    case VFIO_DEVICE_FEATURE_MIGRATION:
      supported = VFIO_DEVICE_FEATURE_GET;
      break;
    case VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE:
      supported = VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_SET;
      break;
    default:
      return -ENOTTY;
  }
  if ((flags & (VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_SET)) & ~supported) return -EINVAL;
  if (probe) return 0;
  if (!get && !set) return -EINVAL;
  if (argsz < kVfioMigFeatureArgsz) return -EINVAL;  // Every migration payload is 8 bytes.

  switch (id) {
    case VFIO_DEVICE_FEATURE_MIGRATION: {
      vfio_device_feature_migration m{model_.spec().features.flags};
      std::memcpy(buf->payload, &m, sizeof(m));
      return 0;
    }
    case VFIO_DEVICE_FEATURE_MIG_DATA_SIZE: {
      vfio_device_feature_mig_data_size d{model_.StopCopyEstimate()};
      std::memcpy(buf->payload, &d, sizeof(d));
      return 0;
    }
    default:
      break;
  }
  vfio_device_feature_mig_state mig;
  std::memcpy(&mig, buf->payload, sizeof(mig));
  absl::MutexLock l(&mu_);
  if (get) {
    mig.device_state = static_cast<uint32_t>(state_);
    mig.data_fd = -1;
    std::memcpy(buf->payload, &mig, sizeof(mig));
    return 0;
  }
  // A failed SET leaves the payload as the caller wrote it but for data_fd: the state field
  // echoes the request, not where the device is.
  int data_fd = -1;
  int r = mig.device_state >= static_cast<uint32_t>(kNumMigStates)
              ? -EINVAL
              : SetState(static_cast<MigState>(mig.device_state), &data_fd);
  mig.data_fd = data_fd;
  std::memcpy(buf->payload, &mig, sizeof(mig));
  return r;
}

int SimulatedDriver::SetState(MigState target, int* data_fd) {
  // The driver's loop over vfio_mig_get_next_state(); a request equal to the current state is a
  // no-op before any check, as in the kernel drivers.
  if (target == MigState::kError) return -EINVAL;
  if (target == state_) return 0;
  auto path = FindFsmPath(model_.spec().features, state_, target);
  if (!path.ok()) return -EINVAL;
  UniqueFd fd;
  for (size_t i = 1; i < path->size(); ++i) {
    int r = Arc((*path)[i], &fd);
    if (r != 0) return r;  // The device stays at the last state reached (or ERROR).
  }
  *data_fd = fd.Release();
  return 0;
}

int SimulatedDriver::Arc(MigState next, UniqueFd* data_fd) {
  const MigState from = state_;
  const SimDeviceSpec& spec = model_.spec();
  if (spec.fail_arc && from == spec.fail_from && next == spec.fail_to) {
    if (spec.fail_to_error) {
      EndSessions();
      state_ = MigState::kError;
    }
    return -spec.fail_errno;
  }
  if (ArcEndsDataSession(from, next)) {
    if (from == MigState::kResuming) {
      if (spec.commit_delay_ms != 0) absl::SleepFor(absl::Milliseconds(spec.commit_delay_ms));
      absl::Status commit = resuming_ ? resuming_->Commit() : absl::DataLossError("no session");
      if (!commit.ok()) return -EINVAL;  // Short or inconsistent data: stay in RESUMING.
      resuming_.reset();
    } else {
      saving_.reset();
    }
  }
  if (ArcOpensDataFd(from, next)) {
    if (next == MigState::kResuming) {
      auto session = SimResumingSession::Start(&model_, data_fd);
      if (!session.ok()) return -ENOMEM;
      resuming_ = std::move(*session);
    } else {
      auto session = SimSavingSession::Start(&model_, image_.get(), next == MigState::kStopCopy,
                                              data_fd);
      if (!session.ok()) return -ENOMEM;
      saving_ = std::move(*session);
    }
  } else if (next == MigState::kStopCopy && saving_) {
    saving_->EnterStopCopy();  // PRE_COPY(_P2P) -> STOP_COPY: same fd, final state follows.
  }
  model_.SetRunning(Runs(next));
  state_ = next;
  static std::atomic<uint64_t> arc_seq{0};
  arcs_.push_back(ArcRecord{arc_seq.fetch_add(1), from, next});
  return 0;
}

std::vector<SimulatedDriver::ArcRecord> SimulatedDriver::arcs() const {
  absl::MutexLock l(&mu_);
  return arcs_;
}

int SimulatedDriver::Precopy(int fd, void* arg) {
  auto* info = static_cast<vfio_precopy_info*>(arg);
  if (info->argsz < sizeof(vfio_precopy_info)) return -EINVAL;
  absl::MutexLock l(&mu_);
  if (!saving_ || !saving_->Owns(fd)) {
    // Not a live saving fd of this device: a dead session's fd (ENODEV in mlx5/mtty) or
    // some other fd.
    return (resuming_ && resuming_->Owns(fd)) ? -EINVAL : -ENOTTY;
  }
  if (state_ != MigState::kPreCopy && state_ != MigState::kPreCopyP2P) return -EINVAL;
  PrecopyInfo p = saving_->Precopy();
  info->initial_bytes = p.initial_bytes;
  info->dirty_bytes = p.dirty_bytes;
  return 0;
}

void SimulatedDriver::EndSessions() {
  saving_.reset();
  resuming_.reset();
}

absl::StatusOr<std::unique_ptr<VfioDevice>> OpenSimulatedDevice(
    const SimDeviceSpec& spec, std::shared_ptr<SimulatedDriver>* driver_out) {
  ASSIGN_OR_RETURN(std::shared_ptr<SimulatedDriver> driver, SimulatedDriver::Create(spec));
  ASSIGN_OR_RETURN(UniqueFd fd, driver->OpenDeviceFd());
  if (driver_out) *driver_out = driver;
  return VfioDevice::Open(std::move(fd), std::move(driver));
}

}  // namespace migmover::sim
