// SimulatedDriver: a userspace VFIO migration driver behind the IoctlSeam. It answers the same
// ioctls a kernel driver does (VFIO_DEVICE_FEATURE with the kernel's envelope checks, the FSM with
// the kernel's walk and per-arc driver actions, VFIO_MIG_GET_PRECOPY_INFO on the saving data fd,
// VFIO_DEVICE_RESET), with real kernel fds: a memfd stands in for the device fd and pipes are
// the data fds. Demos, tests and benchmarks run the production VfioDevice code against it.
#ifndef MIGMOVER_DAEMON_DEVICE_SIM_SIM_DRIVER_H_
#define MIGMOVER_DAEMON_DEVICE_SIM_SIM_DRIVER_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "daemon/device/ioctl_seam.h"
#include "daemon/device/sim/sim_content_image.h"
#include "daemon/device/sim/sim_device_model.h"
#include "daemon/device/sim/sim_device_spec.h"
#include "daemon/device/sim/sim_resuming_session.h"
#include "daemon/device/sim/sim_saving_session.h"
#include "daemon/device/vfio_device.h"

namespace migmover::sim {

class SimulatedDriver final : public IoctlSeam {
 public:
  // Errors: InvalidArgument for an invalid spec; with content=image, the image's (ENOMEM...).
  static absl::StatusOr<std::shared_ptr<SimulatedDriver>> Create(const SimDeviceSpec& spec);
  ~SimulatedDriver() override;

  // A new device fd for this device (a memfd: a real fd that carries only its identity).
  absl::StatusOr<UniqueFd> OpenDeviceFd();

  int Ioctl(int fd, unsigned long request, void* arg) override;

  // Introspection for tests and the demo (not part of the uAPI).
  MigState state() const;
  uint64_t state_digest() const { return model_.state_digest(); }
  uint64_t content_digest() const { return model_.content_digest(); }
  const SimDeviceSpec& spec() const { return model_.spec(); }
  // Every FSM arc this device took, in order; `seq` counts arcs across all simulated devices of
  // the process, so tests can order one device's arcs against another's.
  struct ArcRecord {
    uint64_t seq;
    MigState from, to;
  };
  std::vector<ArcRecord> arcs() const;

 private:
  explicit SimulatedDriver(const SimDeviceSpec& spec) : model_(spec) {}
  int Feature(void* arg);
  int SetState(MigState target, int* data_fd) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int Arc(MigState next, UniqueFd* data_fd) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int Precopy(int fd, void* arg);
  void EndSessions() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool IsDeviceFd(int fd) const;

  SimDeviceModel model_;
  std::unique_ptr<const SimContentImage> image_;  // content=image only; set in Create.
  mutable absl::Mutex mu_;  // The driver's state mutex: one FSM change at a time.
  MigState state_ ABSL_GUARDED_BY(mu_) = MigState::kRunning;
  dev_t device_dev_ = 0;
  ino_t device_ino_ = 0;
  std::unique_ptr<SimSavingSession> saving_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<SimResumingSession> resuming_ ABSL_GUARDED_BY(mu_);
  std::vector<ArcRecord> arcs_ ABSL_GUARDED_BY(mu_);
};

// A VfioDevice over a new simulated driver; `driver_out` (optional) receives the driver.
absl::StatusOr<std::unique_ptr<VfioDevice>> OpenSimulatedDevice(
    const SimDeviceSpec& spec, std::shared_ptr<SimulatedDriver>* driver_out = nullptr);

}  // namespace migmover::sim

#endif  // MIGMOVER_DAEMON_DEVICE_SIM_SIM_DRIVER_H_
