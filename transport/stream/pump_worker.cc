#include "transport/stream/pump_worker.h"

#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <map>

#include "absl/time/clock.h"
#include "transport/base/errno_status.h"
#include "transport/io/io_queue_factory.h"

namespace migmover::stream {
namespace {
constexpr uint8_t kWake = 0x7f;
constexpr absl::Duration kTick = absl::Milliseconds(50);
// Requests in flight at once on the worker's queue; more wait in the queue's backlog.
constexpr uint32_t kQueueDepth = 256;
}  // namespace

struct PumpWorker::Request {
  std::shared_ptr<BufferPool> buffers;
  JobFactory make;
  std::unique_ptr<PumpJob> job;  // Handed back when done; null if it never ran.
  absl::Status refused;          // Why it never ran.
  bool done = false;             // Guarded by the worker's mu_.
};

absl::StatusOr<std::unique_ptr<PumpWorker>> PumpWorker::Start(io::IoEngine engine) {
  std::unique_ptr<PumpWorker> w(new PumpWorker());
  w->engine_ = engine;
  w->wake_fd_.Reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!w->wake_fd_) return ErrnoStatus("eventfd(pump worker)", errno);
  w->thread_ = std::thread([p = w.get()] { p->Loop(); });
  absl::Status started;
  {
    absl::MutexLock l(&w->mu_);
    w->mu_.Await(absl::Condition(&w->started_));
    started = w->start_status_;
  }
  if (!started.ok()) return started;  // The thread has returned; the destructor joins it.
  return w;
}

PumpWorker::~PumpWorker() {
  stop_ = true;
  WakeQueue();
  if (thread_.joinable()) thread_.join();
}

void PumpWorker::WakeQueue() {
  uint64_t one = 1;
  (void)!::write(wake_fd_.get(), &one, sizeof(one));
}

absl::Status PumpWorker::NewQueue() {
  absl::StatusOr<std::unique_ptr<io::IoQueue>> q = io::CreateIoQueue(engine_, kQueueDepth);
  if (!q.ok()) return q.status();
  queue_ = std::move(*q);
  engine_name_.store(queue_->engine(), std::memory_order_relaxed);
  queue_->Read(wake_fd_.get(), &wake_value_, sizeof(wake_value_), io::kUnregistered,
               io::Tag(kWake, 0));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<PumpJob>> PumpWorker::RunJob(std::shared_ptr<BufferPool> buffers,
                                                            JobFactory make) {
  Request r{std::move(buffers), std::move(make)};
  {
    absl::MutexLock l(&mu_);
    if (!failed_.ok()) return failed_;
    pending_.push_back(&r);
  }
  WakeQueue();
  absl::MutexLock l(&mu_);
  mu_.Await(absl::Condition(&r.done));
  if (r.job == nullptr) return r.refused;
  return std::move(r.job);
}

void PumpWorker::Loop() {
  pthread_setname_np(pthread_self(), "mm-pump-worker");
  {
    absl::Status s = NewQueue();
    absl::MutexLock l(&mu_);
    start_status_ = s;
    started_ = true;
    if (!s.ok()) return;
  }
  struct Active {
    Request* request;
    std::unique_ptr<PumpJob> job;
  };
  std::map<uint32_t, Active> active;
  uint32_t next_job = 1;
  auto hand_back = [&](Active& a) {
    absl::MutexLock l(&mu_);
    a.request->job = std::move(a.job);
    a.request->done = true;
  };
  // The queue broke (EINTR and backpressure never get here): every job on it fails with the
  // call that broke it, and the worker carries on with a new queue for the host's other and
  // later streams. What the dead queue's requests may still write into, the jobs' buffers and
  // the jobs themselves (a receive's header lands in the job), is kept, never freed: their
  // callers get the error instead of the job.
  auto replace_queue = [&](const absl::Status& why) -> bool {
    queue_failures_.fetch_add(1, std::memory_order_relaxed);
    for (auto& [id, a] : active) {
      a.job->Abort(why);
      if (a.request->buffers != nullptr) quarantined_.push_back(a.request->buffers);
      quarantined_jobs_.push_back(std::move(a.job));
      absl::MutexLock l(&mu_);
      a.request->refused = why;
      a.request->done = true;
    }
    active.clear();
    broken_queues_.push_back(std::move(queue_));
    if (absl::Status s = NewQueue(); !s.ok()) {
      absl::MutexLock l(&mu_);
      failed_ = s;
      failed_flag_.store(true, std::memory_order_relaxed);
      return false;
    }
    return true;
  };
  absl::Time next_tick = absl::Now() + kTick;
  while (!(stop_.load() && active.empty())) {
    std::deque<Request*> taken;
    {
      absl::MutexLock l(&mu_);
      taken.swap(pending_);
    }
    for (Request* r : taken) {
      uint32_t id = next_job++ & 0xffffff;
      while (id == 0 || active.count(id) != 0) id = next_job++ & 0xffffff;
      Active a{r, r->make(queue_.get(), id)};
      active.emplace(id, std::move(a));
    }
    absl::Time wake_by = next_tick;
    for (auto it = active.begin(); it != active.end();) {
      it->second.job->Issue();
      if (it->second.job->Done() && !queue_->status().ok()) break;  // Handled below.
      if (it->second.job->Done()) {
        hand_back(it->second);
        it = active.erase(it);
        jobs_done_.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      wake_by = std::min(wake_by, it->second.job->WakeBy());
      ++it;
    }
    // A job's Submit or Cancel may have broken the queue (the job aborted itself).
    if (!queue_->status().ok()) {
      if (!replace_queue(queue_->status())) break;
      continue;
    }
    if (stop_.load() && active.empty()) break;
    io::Completion batch[64];
    absl::Duration wait = std::max(wake_by - absl::Now(), absl::ZeroDuration());
    absl::StatusOr<size_t> got = queue_->WaitBatch(wait, batch);
    if (!got.ok()) {
      if (!replace_queue(got.status())) break;
      continue;
    }
    for (size_t i = 0; i < *got; ++i) {
      const uint64_t ud = batch[i].user_data;
      if (ud == io::kCancelTag) continue;
      if (io::TagKind(ud) == kWake) {
        queue_->Read(wake_fd_.get(), &wake_value_, sizeof(wake_value_), io::kUnregistered,
                     io::Tag(kWake, 0));
        continue;
      }
      auto it = active.find(JobOf(ud));
      if (it != active.end()) it->second.job->OnCompletion(batch[i]);
    }
    if (absl::Now() >= next_tick) {
      for (auto& [id, a] : active) a.job->OnTick();
      next_tick = absl::Now() + kTick;
    }
  }
  // Anyone whose request was not taken gets the reason the worker stopped.
  absl::MutexLock l(&mu_);
  if (failed_.ok()) failed_ = absl::CancelledError("pump worker stopped");
  failed_flag_.store(true, std::memory_order_relaxed);
  const absl::Status why = failed_;  // Later requests get it too.
  for (Request* r : pending_) {
    r->refused = why;
    r->done = true;
  }
  pending_.clear();
}

}  // namespace migmover::stream
