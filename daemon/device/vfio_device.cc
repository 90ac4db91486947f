#include "daemon/device/vfio_device.h"

#include <cstring>

#include "daemon/base/log.h"
#include "daemon/metrics/metrics.h"

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "daemon/device/fsm_path.h"
#include "daemon/device/vfio_uapi.h"
#include "transport/base/errno_status.h"
#include "transport/base/status_macros.h"

namespace migmover {
namespace {

VfioFeatureBuffer MakeFeature(uint32_t flags) {
  VfioFeatureBuffer buf;
  std::memset(&buf, 0, sizeof(buf));
  buf.argsz = kVfioMigFeatureArgsz;
  buf.flags = flags;
  return buf;
}

template <typename T>
T* Payload(VfioFeatureBuffer& buf) {
  static_assert(sizeof(T) <= sizeof(buf.payload));
  return reinterpret_cast<T*>(buf.payload);
}

}  // namespace

absl::StatusOr<std::unique_ptr<VfioDevice>> VfioDevice::Open(UniqueFd device_fd,
                                                             std::shared_ptr<IoctlSeam> seam) {
  if (!device_fd.valid()) return absl::InvalidArgumentError("VfioDevice::Open: no device fd");
  std::unique_ptr<VfioDevice> dev(new VfioDevice(std::move(device_fd), std::move(seam)));

  VfioFeatureBuffer buf = MakeFeature(VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIGRATION);
  int r = dev->seam_->Ioctl(dev->fd(), VFIO_DEVICE_FEATURE, &buf);
  if (r < 0) {
    absl::Status s = ErrnoStatus(
        absl::StrCat("ioctl(VFIO_DEVICE_FEATURE GET MIGRATION, fd ", dev->fd(), ")"), -r);
    if (-r == ENOTTY) {
      return absl::UnimplementedError(
          absl::StrCat(s.message(), ": the device has no VFIO migration support"));
    }
    return s;
  }
  dev->features_.flags = Payload<vfio_device_feature_migration>(buf)->flags;
  if (!dev->features_.stop_copy()) {
    return absl::FailedPreconditionError(
        absl::StrCat("device fd ", dev->fd(), " advertises migration flags ",
                     dev->features_.ToString(), " without the mandatory STOP_COPY"));
  }
  ASSIGN_OR_RETURN(dev->state_, dev->GetState());
  return dev;
}

absl::StatusOr<MigState> VfioDevice::GetState() {
  VfioFeatureBuffer buf =
      MakeFeature(VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE);
  auto* mig = Payload<vfio_device_feature_mig_state>(buf);
  mig->data_fd = -1;
  int r = seam_->Ioctl(fd(), VFIO_DEVICE_FEATURE, &buf);
  if (r < 0) {
    state_ = MigState::kError;
    return ErrnoStatus(
        absl::StrCat("ioctl(VFIO_DEVICE_FEATURE GET MIG_DEVICE_STATE, fd ", fd(), ")"), -r);
  }
  if (mig->device_state >= static_cast<uint32_t>(kNumMigStates)) {
    state_ = MigState::kError;
    return absl::DataLossError(absl::StrCat("device fd ", fd(), " reports unknown state ",
                                            mig->device_state));
  }
  state_ = static_cast<MigState>(mig->device_state);
  return state_;
}

absl::StatusOr<UniqueFd> VfioDevice::SetArc(MigState next, bool final_arc) {
  const MigState from = state_;
  VfioFeatureBuffer buf =
      MakeFeature(VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE);
  auto* mig = Payload<vfio_device_feature_mig_state>(buf);
  mig->device_state = static_cast<uint32_t>(next);
  mig->data_fd = -1;
  const std::string call = absl::StrCat("ioctl(VFIO_DEVICE_FEATURE SET MIG_DEVICE_STATE ",
                                        MigStateName(from), "->", MigStateName(next), ", fd ",
                                        fd(), ")");
  int r = seam_->Ioctl(fd(), VFIO_DEVICE_FEATURE, &buf);
  if (r < 0) {
    Metrics().DeviceArcFailed(MigStateName(from), MigStateName(next));
    // A failed SET echoes the requested state: only a GET tells where the device is.
    auto now = GetState();
    std::string where = now.ok() ? absl::StrCat("device now in ", MigStateName(*now))
                                 : absl::StrCat("state unknown (", now.status().message(), ")");
    const char* err = ::strerrorname_np(-r);
    MM_LOG(WARNING)
            .With("session", log_session_)
            .With("device", log_device_)
            .With("from", MigStateName(from))
            .With("to", MigStateName(next))
            .With("errno", err != nullptr ? err : absl::StrCat(-r))
        << "device " << log_device_ << ": " << call << " failed: " << (err ? err : "?") << ", "
        << where;
    return ErrnoStatus(call, -r, where);
  }
  MM_LOG(INFO)
          .With("session", log_session_)
          .With("device", log_device_)
          .With("from", MigStateName(from))
          .With("to", MigStateName(next))
      << "device " << log_device_ << ": " << MigStateName(from) << " -> " << MigStateName(next);
  state_ = next;
  UniqueFd data_fd(mig->data_fd >= 0 ? mig->data_fd : -1);
  const bool expect_fd = ArcOpensDataFd(from, next);
  if (expect_fd && !data_fd.valid()) {
    return absl::InternalError(absl::StrCat(call, " succeeded but returned no data fd"));
  }
  if (!expect_fd && data_fd.valid()) {
    // QEMU reads an unexpected fd as the trace of an asynchronous reset.
    return absl::InternalError(
        absl::StrCat(call, " returned data fd ", data_fd.get(), " on an arc that opens none"));
  }
  if (data_fd.valid() && !final_arc) {
    return absl::InternalError(absl::StrCat(call, " opened a data fd before the final arc"));
  }
  return data_fd;
}

absl::StatusOr<UniqueFd> VfioDevice::SetState(MigState target) {
  ASSIGN_OR_RETURN(FsmPath path, FindFsmPath(features_, state_, target));
  UniqueFd data_fd;
  for (size_t i = 1; i < path.size(); ++i) {
    ASSIGN_OR_RETURN(data_fd, SetArc(path[i], i + 1 == path.size()));
  }
  return data_fd;
}

absl::StatusOr<PrecopyInfo> VfioDevice::GetPrecopyInfo(int data_fd) {
  vfio_precopy_info info;
  std::memset(&info, 0, sizeof(info));
  info.argsz = sizeof(info);
  int r = seam_->Ioctl(data_fd, VFIO_MIG_GET_PRECOPY_INFO, &info);
  if (r < 0) {
    return ErrnoStatus(absl::StrCat("ioctl(VFIO_MIG_GET_PRECOPY_INFO, data fd ", data_fd, ")"),
                       -r);
  }
  return PrecopyInfo{info.initial_bytes, info.dirty_bytes, info.flags};
}

absl::StatusOr<uint64_t> VfioDevice::StopCopySize() {
  VfioFeatureBuffer buf =
      MakeFeature(VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIG_DATA_SIZE);
  int r = seam_->Ioctl(fd(), VFIO_DEVICE_FEATURE, &buf);
  if (r < 0) {
    return ErrnoStatus(absl::StrCat("ioctl(VFIO_DEVICE_FEATURE GET MIG_DATA_SIZE, fd ", fd(), ")"),
                       -r);
  }
  return Payload<vfio_device_feature_mig_data_size>(buf)->stop_copy_length;
}

absl::Status VfioDevice::Reset() {
  int r = seam_->Ioctl(fd(), VFIO_DEVICE_RESET, nullptr);
  if (r < 0) {
    state_ = MigState::kError;
    return ErrnoStatus(absl::StrCat("ioctl(VFIO_DEVICE_RESET, fd ", fd(), ")"), -r);
  }
  state_ = MigState::kRunning;
  return absl::OkStatus();
}

std::string VfioDevice::Describe() const {
  return absl::StrCat("vfio fd ", fd(), " (", features_.ToString(), ")");
}

}  // namespace migmover
