// VfioMdev: the test agent's own handle on one mediated device (the kernel's mtty sample),
// opened through VFIO either way a VMM opens one: group + type1v2 container, or the device's
// cdev bound to an iommufd (Linux 6.6 and later). The agent hands a
// duplicate of the device fd to migmoverd and keeps this one to check, independently of the
// daemon, what the kernel says: the migration state, the UART registers, a reset.
#ifndef MIGMOVER_TESTS_KERNEL_VFIO_MDEV_H_
#define MIGMOVER_TESTS_KERNEL_VFIO_MDEV_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "daemon/device/mig_state.h"
#include "transport/base/unique_fd.h"

namespace migmover::kernel_test {

class VfioMdev {
 public:
  enum class Access {
    kGroup,  // /dev/vfio/<group> in a VFIO_TYPE1v2_IOMMU container.
    kCdev,   // /dev/vfio/devices/vfioN bound to /dev/iommu, attached to a fresh IOAS.
  };

  // Creates an instance of mdev type `type` (e.g. "mtty-1") of parent driver `parent` ("mtty")
  // with a fresh UUID and opens it through `access`. Errors name the sysfs file or ioctl that
  // failed.
  static absl::StatusOr<std::unique_ptr<VfioMdev>> Create(const std::string& parent,
                                                          const std::string& type,
                                                          Access access = Access::kGroup);
  // Removes the instance (writes 1 to its sysfs "remove" after closing the fds).
  ~VfioMdev();

  const std::string& uuid() const { return uuid_; }
  int device_fd() const { return device_.get(); }
  // A new fd for the same open device (for the daemon's fd intake; the caller owns it).
  absl::StatusOr<UniqueFd> Dup() const;

  // VFIO_DEVICE_FEATURE GET MIG_DEVICE_STATE.
  absl::StatusOr<MigState> State() const;
  // VFIO_DEVICE_FEATURE GET MIGRATION: the VFIO_MIGRATION_* flags.
  absl::StatusOr<uint64_t> MigrationFlags() const;
  // VFIO_DEVICE_RESET: the device returns to RUNNING.
  absl::Status Reset() const;

  // One byte of BAR0 (the emulated 16550 UART's registers) at `offset`.
  absl::StatusOr<uint8_t> ReadBar0(uint32_t offset) const;
  absl::Status WriteBar0(uint32_t offset, uint8_t value) const;

 private:
  VfioMdev() = default;
  absl::Status OpenGroup();
  absl::Status OpenCdev();
  absl::Status FindBar0();

  std::string parent_, uuid_;
  // Group access: the container and the group; cdev access: the iommufd (in container_).
  UniqueFd container_, group_, device_;
  uint64_t bar0_offset_ = 0;
};

// The UART's scratch register: it holds whatever is written there, and mtty migrates it.
inline constexpr uint32_t kUartScratchRegister = 7;

}  // namespace migmover::kernel_test

#endif  // MIGMOVER_TESTS_KERNEL_VFIO_MDEV_H_
