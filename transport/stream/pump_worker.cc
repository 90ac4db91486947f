#include "transport/stream/pump_worker.h"

#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "transport/base/errno_status.h"
#include "transport/io/io_queue_factory.h"

namespace migmover::stream {
namespace {
constexpr uint8_t kWake = 0x7f;
constexpr absl::Duration kTick = absl::Milliseconds(50);
}  // namespace

struct PumpWorker::Request {
  uint32_t want;
  JobFactory make;
  std::unique_ptr<PumpJob> job;  // Handed back when done; null if it never ran.
  absl::Status refused;          // Why it never ran.
  bool done = false;             // Guarded by the worker's mu_.
};

absl::StatusOr<std::unique_ptr<PumpWorker>> PumpWorker::Start(uint32_t buffers,
                                                              uint32_t chunk_size,
                                                              io::IoEngine engine) {
  std::unique_ptr<PumpWorker> w(new PumpWorker());
  w->engine_ = engine;
  w->chunk_size_ = chunk_size;
  w->buffers_ = buffers;
  w->wake_fd_.Reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!w->wake_fd_) return ErrnoStatus("eventfd(pump worker)", errno);
  w->thread_ = std::thread([p = w.get()] { p->Loop(); });
  absl::MutexLock l(&w->mu_);
  w->mu_.Await(absl::Condition(&w->started_));
  if (!w->start_status_.ok()) {
    absl::Status s = w->start_status_;
    w->mu_.Unlock();
    w->stop_ = true;
    w->thread_.join();
    w->mu_.Lock();
    return s;
  }
  return w;
}

absl::StatusOr<std::vector<std::unique_ptr<PumpWorker>>> PumpWorker::StartPool(
    uint32_t workers, size_t streams, uint32_t buffers_per_stream, uint32_t chunk_size,
    io::IoEngine engine) {
  std::vector<std::unique_ptr<PumpWorker>> pool;
  const size_t w = std::min<size_t>(workers, streams);
  if (w == 0) return pool;
  const size_t streams_per_worker = (streams + w - 1) / w;
  for (size_t k = 0; k < w; ++k) {
    absl::StatusOr<std::unique_ptr<PumpWorker>> worker =
        Start(static_cast<uint32_t>(buffers_per_stream * streams_per_worker), chunk_size, engine);
    if (!worker.ok()) return worker.status();
    pool.push_back(std::move(*worker));
  }
  return pool;
}

PumpWorker::~PumpWorker() {
  stop_ = true;
  WakeRing();
  if (thread_.joinable()) thread_.join();
}

void PumpWorker::WakeRing() {
  uint64_t one = 1;
  (void)!::write(wake_fd_.get(), &one, sizeof(one));
}

absl::StatusOr<std::unique_ptr<PumpJob>> PumpWorker::RunJob(uint32_t slots_wanted,
                                                            JobFactory make) {
  Request r{std::min(slots_wanted, buffers_), std::move(make)};
  {
    absl::MutexLock l(&mu_);
    if (!failed_.ok()) return failed_;
    queue_.push_back(&r);
  }
  WakeRing();
  absl::MutexLock l(&mu_);
  mu_.Await(absl::Condition(&r.done));
  if (r.job == nullptr) return r.refused;
  return std::move(r.job);
}

void PumpWorker::Loop() {
  pthread_setname_np(pthread_self(), "mm-pump-worker");
  {
    absl::Status s;
    auto ring = io::CreateIoQueue(engine_, 256);
    if (!ring.ok()) {
      s = ring.status();
    } else {
      ring_ = std::move(*ring);
      auto pool = BufferPool::Create(ring_.get(), buffers_, chunk_size_, wire::kFrameHeaderSize);
      if (pool.ok()) {
        pool_ = std::move(*pool);
      } else {
        s = pool.status();
      }
    }
    absl::MutexLock l(&mu_);
    start_status_ = s;
    started_ = true;
    if (!s.ok()) return;
  }
  struct Active {
    Request* request;
    std::unique_ptr<PumpJob> job;
    std::vector<uint32_t> slots;
  };
  std::map<uint32_t, Active> active;
  std::deque<Request*> waiting;  // Taken from the queue, waiting for buffers.
  std::vector<uint32_t> free_slots;
  for (uint32_t i = 0; i < buffers_; ++i) free_slots.push_back(i);
  uint32_t next_job = 1;
  uint64_t wake_value = 0;
  auto arm_wake = [&] {
    ring_->Read(wake_fd_.get(), &wake_value, sizeof(wake_value), io::kUnregistered,
                io::Tag(kWake, 0));
  };
  arm_wake();
  absl::Time next_tick = absl::Now() + kTick;
  while (!(stop_.load() && active.empty())) {
    {
      absl::MutexLock l(&mu_);
      while (!queue_.empty()) {
        waiting.push_back(queue_.front());
        queue_.pop_front();
      }
    }
    while (!waiting.empty()) {
      Request* r = waiting.front();
      if (free_slots.size() < r->want) break;
      Active a{r, nullptr, {}};
      a.slots.assign(free_slots.end() - r->want, free_slots.end());
      free_slots.resize(free_slots.size() - r->want);
      const uint32_t id = next_job++ & 0xffffff;
      a.job = r->make(ring_.get(), pool_.get(), a.slots, id);
      active.emplace(id, std::move(a));
      waiting.pop_front();
    }
    absl::Time wake_by = next_tick;
    for (auto it = active.begin(); it != active.end();) {
      it->second.job->Issue();
      if (it->second.job->Done()) {
        Request* r = it->second.request;
        free_slots.insert(free_slots.end(), it->second.slots.begin(), it->second.slots.end());
        std::unique_ptr<PumpJob> job = std::move(it->second.job);
        it = active.erase(it);
        jobs_done_.fetch_add(1, std::memory_order_relaxed);
        absl::MutexLock l(&mu_);
        r->job = std::move(job);
        r->done = true;
        continue;
      }
      wake_by = std::min(wake_by, it->second.job->WakeBy());
      ++it;
    }
    if (stop_.load() && active.empty()) break;
    io::Completion batch[64];
    absl::Duration wait = std::max(wake_by - absl::Now(), absl::ZeroDuration());
    absl::StatusOr<size_t> got = ring_->WaitBatch(wait, batch);
    if (!got.ok()) {
      // The ring broke (EINTR and backpressure never get here): fail every job on it, and every
      // later one, with the call that broke it, instead of spinning on a dead ring.
      for (auto& [id, a] : active) a.job->Abort(got.status());
      absl::MutexLock l(&mu_);
      failed_ = got.status();
      break;
    }
    for (size_t i = 0; i < *got; ++i) {
      const uint64_t ud = batch[i].user_data;
      if (ud == io::kCancelTag) continue;
      if (io::TagKind(ud) == kWake) {
        arm_wake();
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
  // Jobs the ring failed under go back with their error; anyone still waiting for buffers gets
  // the reason the worker stopped.
  absl::MutexLock l(&mu_);
  for (auto& [id, a] : active) {
    a.request->job = std::move(a.job);
    a.request->done = true;
  }
  const absl::Status why =
      failed_.ok() ? absl::CancelledError("pump worker stopped") : failed_;
  for (Request* r : waiting) {
    r->refused = why;
    r->done = true;
  }
  for (Request* r : queue_) {
    r->refused = why;
    r->done = true;
  }
  queue_.clear();
}

}  // namespace migmover::stream
