// SimResumingSession: the resuming half of the simulated driver. A consumer thread reads what
// userspace writes into the data fd (a pipe's write end) and checks it record by record; on a
// bad record it stops reading and closes its end, so userspace's next write fails (EPIPE), as a
// real driver fails the write that completes a bad header.
#ifndef MIGMOVER_DAEMON_DEVICE_SIM_SIM_RESUMING_SESSION_H_
#define MIGMOVER_DAEMON_DEVICE_SIM_SIM_RESUMING_SESSION_H_

#include <sys/types.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "daemon/device/sim/sim_device_model.h"
#include "daemon/device/sim/sim_stream.h"
#include "transport/base/unique_fd.h"

namespace migmover::sim {

class SimResumingSession {
 public:
  // `*user_fd` receives the write end (the data fd).
  static absl::StatusOr<std::unique_ptr<SimResumingSession>> Start(SimDeviceModel* model,
                                                                  UniqueFd* user_fd);
  ~SimResumingSession();

  // RESUMING -> STOP: consumes everything written so far and checks the stream is complete and
  // exactly what the source produced. On success the device model holds the resumed state.
  absl::Status Commit();

  bool Owns(int fd) const;
  uint64_t bytes_consumed() const;

 private:
  explicit SimResumingSession(SimDeviceModel* model) : model_(model) {}
  void Run();
  // Reads what is available; returns false when the consumer should stop (error or EOF).
  bool Drain();

  SimDeviceModel* model_;
  UniqueFd read_fd_;
  UniqueFd cancel_fd_;
  dev_t pipe_dev_ = 0;
  ino_t pipe_ino_ = 0;
  std::vector<uint8_t> buf_;  // Used by one thread at a time: the consumer, then Commit.
  std::atomic<bool> stop_{false};
  // The spec's stall, on the consumer thread only.
  bool stalled_ = false;
  absl::Time stall_until_;
  std::thread thread_;
  mutable absl::Mutex mu_;
  std::unique_ptr<StreamVerifier> verifier_ ABSL_GUARDED_BY(mu_);
  bool eof_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace migmover::sim

#endif  // MIGMOVER_DAEMON_DEVICE_SIM_SIM_RESUMING_SESSION_H_
