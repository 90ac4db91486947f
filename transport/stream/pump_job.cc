#include "transport/stream/pump_job.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace migmover::stream {

void DriveJob(io::IoQueue* ring, PumpJob& job, absl::Duration tick) {
  absl::Time next_tick = absl::Now() + tick;
  while (true) {
    job.Issue();
    if (job.Done()) return;
    io::Completion batch[32];
    absl::Time wake = std::min(next_tick, job.WakeBy());
    absl::StatusOr<size_t> got =
        ring->WaitBatch(std::max(wake - absl::Now(), absl::ZeroDuration()), batch);
    if (!got.ok()) {
      job.Abort(got.status());
      return;
    }
    for (size_t i = 0; i < *got; ++i) {
      if (batch[i].user_data != io::kCancelTag) job.OnCompletion(batch[i]);
    }
    if (*got == 0 || absl::Now() >= next_tick) {
      job.OnTick();
      next_tick = absl::Now() + tick;
    }
  }
}

}  // namespace migmover::stream
