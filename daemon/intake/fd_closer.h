// FdCloser: closes file descriptors on a thread of its own. A close can block: a socket with
// SO_LINGER and unacknowledged data waits out its linger time, a tty its closing_wait, and the
// last close of a VFIO device may reset the device. The fd intake closes what clients sent (and
// what expired) through this, so no client's fd can stall the loop that serves the others.
//
// Threads: one of its own (mm-fd-closer). Close from any thread; never blocks on a close.
#ifndef MIGMOVER_DAEMON_INTAKE_FD_CLOSER_H_
#define MIGMOVER_DAEMON_INTAKE_FD_CLOSER_H_

#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "transport/base/unique_fd.h"

namespace migmover {

class FdCloser {
 public:
  FdCloser();
  // Closes whatever is still queued (here, on the caller's thread) after the thread stops.
  ~FdCloser();
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;

  // Takes the fds; they are closed soon, in order, on the closer's thread.
  void Close(std::vector<UniqueFd> fds);
  void Close(UniqueFd fd);

  // Waits until every fd handed over so far is closed (tests, shutdown).
  void Drain();

 private:
  void Run();

  absl::Mutex mu_;
  std::vector<UniqueFd> queue_ ABSL_GUARDED_BY(mu_);
  bool closing_ ABSL_GUARDED_BY(mu_) = false;  // The thread holds a batch it is closing.
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace migmover

#endif  // MIGMOVER_DAEMON_INTAKE_FD_CLOSER_H_
