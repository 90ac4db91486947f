#include "daemon/intake/fd_closer.h"

#include <pthread.h>

#include <utility>

namespace migmover {

FdCloser::FdCloser() : thread_([this] { Run(); }) {}

FdCloser::~FdCloser() {
  {
    absl::MutexLock l(&mu_);
    stop_ = true;
  }
  thread_.join();
  queue_.clear();  // No other thread is left to race with.
}

void FdCloser::Close(std::vector<UniqueFd> fds) {
  if (fds.empty()) return;
  absl::MutexLock l(&mu_);
  for (UniqueFd& fd : fds) {
    if (fd) queue_.push_back(std::move(fd));
  }
}

void FdCloser::Close(UniqueFd fd) {
  if (!fd) return;
  absl::MutexLock l(&mu_);
  queue_.push_back(std::move(fd));
}

void FdCloser::Drain() {
  absl::MutexLock l(&mu_);
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return queue_.empty() && !closing_; };
  mu_.Await(absl::Condition(&idle));
}

void FdCloser::Run() {
  pthread_setname_np(pthread_self(), "mm-fd-closer");
  while (true) {
    std::vector<UniqueFd> batch;
    {
      absl::MutexLock l(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return !queue_.empty() || stop_;
      };
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) return;  // Stopping, nothing left.
      batch.swap(queue_);
      closing_ = true;
    }
    batch.clear();  // The closes, with no lock held.
    absl::MutexLock l(&mu_);
    closing_ = false;
  }
}

}  // namespace migmover
