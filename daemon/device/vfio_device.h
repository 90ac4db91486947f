// VfioDevice: MigratableDevice over a VFIO device fd, issuing the uAPI's ioctls through an
// IoctlSeam (the kernel's, or the simulated driver's).
#ifndef MIGMOVER_DAEMON_DEVICE_VFIO_DEVICE_H_
#define MIGMOVER_DAEMON_DEVICE_VFIO_DEVICE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "daemon/device/ioctl_seam.h"
#include "daemon/device/migratable_device.h"
#include "transport/base/unique_fd.h"

namespace migmover {

class VfioDevice final : public MigratableDevice {
 public:
  // Takes ownership of `device_fd`, reads the migration features (GET feature 1) and the current
  // state. `seam` must outlive the device (KernelIoctlSeam() does); pass the simulated driver's
  // seam as a shared_ptr to tie its lifetime to the device.
  // Errors: Unimplemented when the device has no VFIO migration (ENOTTY, as QEMU reads it);
  // FailedPrecondition when it lacks the mandatory STOP_COPY flag; the ioctl's errno otherwise.
  static absl::StatusOr<std::unique_ptr<VfioDevice>> Open(UniqueFd device_fd,
                                                          std::shared_ptr<IoctlSeam> seam);

  MigFeatures features() const override { return features_; }
  absl::StatusOr<MigState> GetState() override;
  absl::StatusOr<UniqueFd> SetState(MigState target) override;
  MigState last_known_state() const override { return state_; }
  void SetLogLabels(absl::string_view device, absl::string_view session) override {
    log_device_ = std::string(device);
    log_session_ = std::string(session);
  }
  absl::StatusOr<PrecopyInfo> GetPrecopyInfo(int data_fd) override;
  absl::StatusOr<uint64_t> StopCopySize() override;
  absl::Status Reset() override;
  std::string Describe() const override;

  int fd() const { return device_fd_.get(); }

 private:
  VfioDevice(UniqueFd device_fd, std::shared_ptr<IoctlSeam> seam)
      : device_fd_(std::move(device_fd)), seam_(std::move(seam)) {}

  // One SET of feature 2 for the single arc state_ -> next.
  absl::StatusOr<UniqueFd> SetArc(MigState next, bool final_arc);

  UniqueFd device_fd_;
  std::shared_ptr<IoctlSeam> seam_;
  MigFeatures features_;
  MigState state_ = MigState::kError;
  std::string log_device_, log_session_;
};

}  // namespace migmover

#endif  // MIGMOVER_DAEMON_DEVICE_VFIO_DEVICE_H_
