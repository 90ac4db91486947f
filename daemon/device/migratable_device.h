// MigratableDevice: what the daemon needs from a device whose state migrates (VFIO migration v2).
#ifndef MIGMOVER_DAEMON_DEVICE_MIGRATABLE_DEVICE_H_
#define MIGMOVER_DAEMON_DEVICE_MIGRATABLE_DEVICE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "daemon/device/mig_state.h"
#include "transport/base/unique_fd.h"

namespace migmover {

// VFIO_MIG_GET_PRECOPY_INFO: estimates of the saving stream still to be read.
struct PrecopyInfo {
  uint64_t initial_bytes = 0;  // Unread part of the mandatory first chunk.
  uint64_t dirty_bytes = 0;    // State changed since it was read.
  uint32_t flags = 0;          // VFIO_PRECOPY_INFO_* (only with MIG_PRECOPY_INFOv2).
};

// Implementations are not thread-safe: one session drives a device at a time.
class MigratableDevice {
 public:
  virtual ~MigratableDevice() = default;

  // The VFIO_MIGRATION_* flags (feature 1), read when the device was opened.
  virtual MigFeatures features() const = 0;

  // The device's current state (SET-free GET of feature 2).
  // Errors: the ioctl's errno as an ErrnoStatus naming the call.
  virtual absl::StatusOr<MigState> GetState() = 0;

  // Moves the device to `target`, one arc at a time along FindFsmPath. Returns the data fd the
  // final arc opened (the caller owns it), or an invalid UniqueFd when the walk opens none.
  // Errors: InvalidArgument (EINVAL) before any ioctl when the kernel would refuse the request
  // (including the blocked STOP_COPY -> PRE_COPY* arcs); otherwise the failing arc's errno, with
  // the state read back after the failure named in the message and in last_known_state().
  virtual absl::StatusOr<UniqueFd> SetState(MigState target) = 0;

  // The state after the last SetState/GetState/Reset (ERROR if unknown).
  virtual MigState last_known_state() const = 0;

  // VFIO_MIG_GET_PRECOPY_INFO on the saving `data_fd` (valid only in PRE_COPY / PRE_COPY_P2P).
  virtual absl::StatusOr<PrecopyInfo> GetPrecopyInfo(int data_fd) = 0;

  // Feature 9: the estimated bytes STOP_COPY still has to stream.
  virtual absl::StatusOr<uint64_t> StopCopySize() = 0;

  // VFIO_DEVICE_RESET: back to RUNNING; every data fd of the device becomes dead.
  virtual absl::Status Reset() = 0;

  // One line for logs: "vfio fd 7 (stop_copy,p2p,pre_copy)".
  virtual std::string Describe() const = 0;

  // What the device's own log lines (one per FSM arc) name it by: its attached name and the
  // session using it ("" when none). Under the same rule as the other calls.
  virtual void SetLogLabels(absl::string_view device, absl::string_view session) = 0;
};

}  // namespace migmover

#endif  // MIGMOVER_DAEMON_DEVICE_MIGRATABLE_DEVICE_H_
