// DeviceRegistry: the devices an agent attached to this daemon, by name, and which session
// holds each.
#ifndef MIGMOVER_DAEMON_REGISTRY_DEVICE_REGISTRY_H_
#define MIGMOVER_DAEMON_REGISTRY_DEVICE_REGISTRY_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "daemon/base/memory_budget.h"
#include "daemon/device/migratable_device.h"
#include "daemon/device/sim/sim_driver.h"
#include "transport/base/unique_fd.h"

namespace migmover {

enum class DeviceKind { kVfio, kSimulated, kSaveDataFd, kResumeDataFd };
const char* DeviceKindName(DeviceKind kind);

// One attached device. `device` (FSM kinds) or `data_fd` (data-fd kinds) is set. Calls on
// `device` and every read or write of `data_fd` go under `mu`; the session that claimed the
// entry is the only one making them, `mu` orders them against status readers (gRPC threads).
// Name, kind, the device pointer and `sim` are fixed once the entry is added.
struct DeviceEntry {
  std::string name;
  DeviceKind kind = DeviceKind::kVfio;
  std::unique_ptr<MigratableDevice> device;   // Pointee: calls under `mu`.
  std::shared_ptr<sim::SimulatedDriver> sim;  // kSimulated: the driver, for introspection.
  absl::Mutex mu;
  // Data-fd kinds: the fd the agent gave. FSM kinds: a data fd opened by SetDeviceState.
  UniqueFd data_fd ABSL_GUARDED_BY(mu);
  // What the device holds of the daemon's --max_memory (a simulated device's bookkeeping),
  // given back when the entry is destroyed (DetachDevice).
  MemoryBudget::Reservation memory;

  bool runs_fsm() const { return kind == DeviceKind::kVfio || kind == DeviceKind::kSimulated; }
};

struct DeviceInfo {
  std::string name;
  DeviceKind kind;
  MigFeatures features;
  MigState state = MigState::kError;
  std::string session_id;
  std::string description;
};

class DeviceRegistry {
 public:
  // Valid names: 1..64 of [A-Za-z0-9._:-]. Errors: InvalidArgument, AlreadyExists.
  static absl::Status CheckName(const std::string& name);
  absl::Status Add(std::unique_ptr<DeviceEntry> entry);

  // Marks the named devices as used by `session_id`, all or none. Errors: NotFound,
  // FailedPrecondition (already in another session), InvalidArgument (listed twice).
  absl::StatusOr<std::vector<DeviceEntry*>> Claim(const std::vector<std::string>& names,
                                                  const std::string& session_id);
  void Release(const std::vector<std::string>& names, const std::string& session_id);

  // Removes an unclaimed device. Errors: NotFound, FailedPrecondition.
  absl::StatusOr<DeviceInfo> Remove(const std::string& name);

  // For SetDeviceState: the entry, if not claimed by a session. The pointer stays valid until
  // Remove.
  absl::StatusOr<DeviceEntry*> GetUnclaimed(const std::string& name);

  absl::StatusOr<DeviceInfo> Info(const std::string& name);
  std::vector<DeviceInfo> List();

 private:
  // Names the session in the device's own log lines.
  void LabelLocked(DeviceEntry* e, const std::string& session_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static DeviceInfo InfoOf(DeviceEntry& e, const std::string& session);

  absl::Mutex mu_;
  struct Slot {
    std::unique_ptr<DeviceEntry> entry;
    std::string session_id;
  };
  std::map<std::string, Slot> devices_ ABSL_GUARDED_BY(mu_);
};

}  // namespace migmover

#endif  // MIGMOVER_DAEMON_REGISTRY_DEVICE_REGISTRY_H_
