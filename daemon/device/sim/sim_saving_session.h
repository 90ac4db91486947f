// SimSavingSession: the saving half of the simulated driver. A producer thread writes the
// device's stream into a pipe whose read end is the data fd handed to userspace, the way a real
// driver fills its migration file as userspace reads.
#ifndef MIGMOVER_DAEMON_DEVICE_SIM_SIM_SAVING_SESSION_H_
#define MIGMOVER_DAEMON_DEVICE_SIM_SIM_SAVING_SESSION_H_

#include <sys/types.h>

#include <atomic>
#include <memory>
#include <thread>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "daemon/device/migratable_device.h"
#include "daemon/device/sim/sim_content_image.h"
#include "daemon/device/sim/sim_device_model.h"
#include "transport/base/unique_fd.h"

namespace migmover::sim {

class SimSavingSession {
 public:
  // Starts producing into a new pipe. `*user_fd` receives the read end (the data fd).
  // `stop_copy`: the session starts in STOP_COPY (STOP -> STOP_COPY) rather than PRE_COPY.
  // `image` (the benchmark device's content, or null for generated content) must outlive the
  // session; its pages are spliced into the pipe, so a DATA payload costs the reader one copy.
  static absl::StatusOr<std::unique_ptr<SimSavingSession>> Start(SimDeviceModel* model,
                                                                const SimContentImage* image,
                                                                bool stop_copy,
                                                                UniqueFd* user_fd);
  // Ends the session (the stream is cut short if unfinished) and joins the producer.
  ~SimSavingSession();

  // PRE_COPY(_P2P) -> STOP_COPY: the rest of the state follows, then END, then EOF.
  void EnterStopCopy();

  // Whether `fd` is this session's data fd (same pipe, even through a dup).
  bool Owns(int fd) const;

  // VFIO_MIG_GET_PRECOPY_INFO's numbers.
  PrecopyInfo Precopy() const;

  uint64_t bytes_written() const { return written_.load(); }
  uint64_t stream_digest() const { return final_digest_.load(); }

 private:
  // The producer runs at most this far ahead of a file-mode reader during precopy.
  static constexpr uint64_t kFileWindow = 4u << 20;

  SimSavingSession(SimDeviceModel* model, const SimContentImage* image)
      : model_(model), image_(image) {}
  absl::Status OpenPipe(UniqueFd* user_fd);
  absl::Status OpenFile(UniqueFd* user_fd);
  // Bytes written but not yet read by the user.
  uint64_t QueuedLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_mu_);
  void AwaitProducedIfFile();
  void MarkProduced();
  void Run();
  // Moves `n` bytes by calling `step(bytes done so far)` (one syscall, counted in written_,
  // returning its result with errno set), waiting for room on EAGAIN. False when cancelled or
  // the reader went away.
  bool PushAll(size_t n, absl::FunctionRef<ssize_t(size_t done)> step);
  // Writes all of `data` unless cancelled. False when cancelled or the reader went away.
  bool WriteAll(const uint8_t* data, size_t n);
  // Splices `n` bytes of the image from `offset` into the pipe, under the same rules.
  bool SpliceAll(uint64_t offset, size_t n);
  // After EAGAIN: waits until the pipe has room (a file: a moment) or the session is cancelled.
  void AwaitRoom();

  SimDeviceModel* model_;
  const SimContentImage* const image_;
  mutable absl::Mutex io_mu_;  // Orders writes and their count against precopy queries.
  UniqueFd write_fd_;      // Pipe write end, or the memfd (file mode).
  UniqueFd reader_probe_;  // File mode: shares the user's file offset.
  bool file_mode_ = false;
  uint64_t punched_ ABSL_GUARDED_BY(io_mu_) = 0;
  std::atomic<bool> produced_{false};  // The producer has finished (END written, or gave up).
  UniqueFd cancel_fd_;  // eventfd: wakes the producer to stop.
  dev_t pipe_dev_ = 0;
  ino_t pipe_ino_ = 0;
  std::atomic<bool> cancelled_{false};
  std::atomic<bool> stop_copy_{false};
  std::atomic<uint64_t> written_{0};
  std::atomic<uint64_t> final_digest_{0};
  uint64_t initial_stream_bytes_ = 0;
  std::thread thread_;
};

}  // namespace migmover::sim

#endif  // MIGMOVER_DAEMON_DEVICE_SIM_SIM_SAVING_SESSION_H_
