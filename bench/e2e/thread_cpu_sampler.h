// ThreadCpuSampler: CPU time of a process's threads (this one's by default), by thread-name
// prefix, sampled from /proc every few milliseconds (a thread's last few milliseconds before it
// exits may be missed), from schedstat's nanoseconds where the kernel has it.
#ifndef MIGMOVER_BENCH_E2E_THREAD_CPU_SAMPLER_H_
#define MIGMOVER_BENCH_E2E_THREAD_CPU_SAMPLER_H_

#include <atomic>
#include <initializer_list>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <sys/types.h>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace migmover::bench {

class ThreadCpuSampler {
 public:
  // `pid` 0: this process. With `track`, only threads whose name starts with one of these are
  // read every few milliseconds (the thread list is scanned every 50 ms), so sampling a busy
  // process costs it little; Seconds() then knows only those.
  explicit ThreadCpuSampler(pid_t pid = 0, std::vector<std::string> track = {});
  ~ThreadCpuSampler();
  void Stop();
  // From now on: Seconds() counts CPU time used after this call.
  void Reset();
  // CPU seconds since Reset() of threads whose name starts with any of `prefixes`.
  double Seconds(std::initializer_list<const char*> prefixes);
  // CPU seconds since Reset() of every sampled thread, by name with its trailing digits taken
  // off (io_uring's "iou-wrk-1234" and "iou-wrk-1250" are one entry, "iou-wrk-").
  std::map<std::string, double> ByName();

 private:
  struct Entry {
    std::string name;
    double seconds = 0;
  };
  void Loop();
  void Sample();

  const std::string task_dir_;  // /proc/<pid>/task
  const std::vector<std::string> track_;
  // One Sample() at a time (the sampling thread's, Reset's and Seconds'): tids of tracked
  // threads, and how many samples since the list was scanned.
  absl::Mutex sample_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  std::vector<int> tracked_ ABSL_GUARDED_BY(sample_mu_);
  int64_t scans_ ABSL_GUARDED_BY(sample_mu_) = 0;
  std::atomic<bool> stop_{false};
  absl::Mutex mu_;
  std::map<int, Entry> last_ ABSL_GUARDED_BY(mu_);
  std::map<int, Entry> base_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace migmover::bench

#endif  // MIGMOVER_BENCH_E2E_THREAD_CPU_SAMPLER_H_
