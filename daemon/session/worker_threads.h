// WorkerThreads: the threads a session starts (one per device), which any thread may join:
// the session manager reaping an ended session, the destructor, daemon shutdown. Join returns
// only once every thread started so far has finished, whoever else is joining at the time, and
// holds no lock while it joins.
#ifndef MIGMOVER_DAEMON_SESSION_WORKER_THREADS_H_
#define MIGMOVER_DAEMON_SESSION_WORKER_THREADS_H_

#include <thread>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace migmover {

class WorkerThreads {
 public:
  ~WorkerThreads() { Join(); }

  template <typename F>
  void Start(F&& f) {
    absl::MutexLock l(&mu_);
    threads_.emplace_back(std::forward<F>(f));
  }

  void Join() {
    std::vector<std::thread> mine;
    {
      absl::MutexLock l(&mu_);
      mine.swap(threads_);
      if (!mine.empty()) ++joining_;
    }
    for (auto& t : mine) t.join();
    absl::MutexLock l(&mu_);
    if (!mine.empty()) --joining_;
    // Threads another caller took are joined by it: wait for that too.
    mu_.Await(absl::Condition(this, &WorkerThreads::NoneJoining));
  }

 private:
  bool NoneJoining() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return joining_ == 0; }

  absl::Mutex mu_;
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
  int joining_ ABSL_GUARDED_BY(mu_) = 0;  // Callers joining threads they took.
};

}  // namespace migmover

#endif  // MIGMOVER_DAEMON_SESSION_WORKER_THREADS_H_
