// PumpJob: one stream's data movement as a state machine on an IoQueue (its "ring": io_uring or
// plain syscalls) it may share with other jobs, so one worker thread can drive several device
// streams (PumpWorker) or just one (the stream's own queue, JobRunner). Every engine is one:
// copy_send_job.h, copy_receive_job.h, splice_send.h, splice_receive.h. A job never blocks its
// thread: it waits by leaving a request in flight, or by WakeBy().
#ifndef MIGMOVER_TRANSPORT_STREAM_PUMP_JOB_H_
#define MIGMOVER_TRANSPORT_STREAM_PUMP_JOB_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "transport/io/io_queue.h"

namespace migmover::stream {

class PumpJob {
 public:
  virtual ~PumpJob() = default;
  // Submits what can go now (reads, sends). Never blocks.
  virtual void Issue() = 0;
  // A completion whose tag carries this job's id (see JobTag).
  virtual void OnCompletion(const io::Completion& c) = 0;
  // Periodic checks: cancellation, the idle timeout, a PRE_COPY read to withdraw at stop.
  virtual void OnTick() = 0;
  // Finished, and nothing of it is in flight any more.
  virtual bool Done() const = 0;
  // The latest time Issue() should run again without a completion (a bandwidth cap's wait).
  virtual absl::Time WakeBy() const = 0;
  // The ring broke (`why` names the call): nothing in flight will complete. The job fails with
  // `why` and is Done() at once; its buffers may still be referenced by the dead requests, so
  // the owner keeps them until the ring is gone.
  virtual void Abort(absl::Status why) = 0;
};

// Drives `job` alone on `ring` (which carries nothing else) until it is Done(), calling
// OnTick() every `tick`. A ring failure aborts the job with it (see PumpJob::Abort), so the
// job's result carries it.
void DriveJob(io::IoQueue* ring, PumpJob& job,
                      absl::Duration tick = absl::Milliseconds(100));

// User data of a job's request: the op kind, the job's id (24 bits) and a slot (24 bits).
inline uint64_t JobTag(uint8_t kind, uint32_t job, uint32_t slot) {
  return io::Tag(kind, (uint64_t{job & 0xffffff} << 24) | (slot & 0xffffff));
}
inline uint32_t JobOf(uint64_t user_data) {
  return static_cast<uint32_t>(io::TagValue(user_data) >> 24) & 0xffffff;
}
inline uint32_t SlotOf(uint64_t user_data) {
  return static_cast<uint32_t>(io::TagValue(user_data) & 0xffffff);
}

}  // namespace migmover::stream

#endif  // MIGMOVER_TRANSPORT_STREAM_PUMP_JOB_H_
