#include "bench/e2e/thread_cpu_sampler.h"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace migmover::bench {

ThreadCpuSampler::ThreadCpuSampler(pid_t pid, std::vector<std::string> track)
    : task_dir_(pid == 0 ? std::string("/proc/self/task") : absl::StrCat("/proc/", pid, "/task")),
      track_(std::move(track)),
      thread_([this] { Loop(); }) {}

ThreadCpuSampler::~ThreadCpuSampler() { Stop(); }

void ThreadCpuSampler::Stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void ThreadCpuSampler::Reset() {
  Sample();
  absl::MutexLock l(&mu_);
  base_ = last_;
}

double ThreadCpuSampler::Seconds(std::initializer_list<const char*> prefixes) {
  Sample();
  absl::MutexLock l(&mu_);
  double total = 0;
  for (auto& [tid, e] : last_) {
    bool match = false;
    for (const char* p : prefixes) match = match || e.name.rfind(p, 0) == 0;
    if (!match) continue;
    auto b = base_.find(tid);
    total += e.seconds - (b != base_.end() ? b->second.seconds : 0);
  }
  return total;
}

std::map<std::string, double> ThreadCpuSampler::ByName() {
  Sample();
  absl::MutexLock l(&mu_);
  std::map<std::string, double> out;
  for (auto& [tid, e] : last_) {
    auto b = base_.find(tid);
    std::string name = e.name;
    while (!name.empty() && name.back() >= '0' && name.back() <= '9') name.pop_back();
    out[name] += e.seconds - (b != base_.end() ? b->second.seconds : 0);
  }
  return out;
}

void ThreadCpuSampler::Loop() {
  while (!stop_) {
    Sample();
    absl::SleepFor(absl::Milliseconds(5));
  }
}

namespace {
// One thread's name (/proc/.../task/<tid>/comm) and CPU seconds; false if it is gone. The CPU
// time comes from schedstat (nanoseconds), not stat's utime + stime: those are in 10 ms clock
// ticks, so a thread that used less than a tick (a small device's stream) would count 0.
bool ReadTask(const std::string& dir, std::string* name, double* seconds) {
  std::ifstream comm(dir + "/comm");
  if (!std::getline(comm, *name)) return false;
  std::ifstream sched(dir + "/schedstat");
  uint64_t ns = 0;
  if (sched >> ns) {
    *seconds = ns / 1e9;
    return true;
  }
  // No schedstat (a kernel without CONFIG_SCHED_INFO): stat's ticks.
  std::ifstream f(dir + "/stat");
  std::string line;
  if (!std::getline(f, line)) return false;
  size_t close = line.rfind(')');
  if (close == std::string::npos) return false;
  std::istringstream rest(line.substr(close + 2));
  std::string tok;
  std::vector<std::string> fs;
  while (rest >> tok) fs.push_back(tok);
  if (fs.size() < 13) return false;
  static const double tick = static_cast<double>(::sysconf(_SC_CLK_TCK));
  *seconds = (std::stod(fs[11]) + std::stod(fs[12])) / tick;
  return true;
}
}  // namespace

void ThreadCpuSampler::Sample() {
  absl::MutexLock sampling(&sample_mu_);
  std::map<int, Entry> now;
  // Every tenth call (50 ms) or without a filter: the whole thread list.
  const bool scan = track_.empty() || scans_++ % 10 == 0;
  if (scan) {
    DIR* d = ::opendir(task_dir_.c_str());
    if (d == nullptr) return;
    std::vector<int> tids;
    while (dirent* de = ::readdir(d)) {
      if (de->d_name[0] != '.') tids.push_back(std::atoi(de->d_name));
    }
    ::closedir(d);
    if (!track_.empty()) tracked_.clear();
    for (int tid : tids) {
      Entry e;
      if (!ReadTask(absl::StrCat(task_dir_, "/", tid), &e.name, &e.seconds)) continue;
      bool match = track_.empty();
      for (const auto& p : track_) match = match || e.name.rfind(p, 0) == 0;
      if (!match) continue;
      if (!track_.empty()) tracked_.push_back(tid);
      now[tid] = e;
    }
  } else {
    for (int tid : tracked_) {
      Entry e;
      if (ReadTask(absl::StrCat(task_dir_, "/", tid), &e.name, &e.seconds)) now[tid] = e;
    }
  }
  absl::MutexLock l(&mu_);
  for (auto& [tid, e] : now) {
    Entry& slot = last_[tid];  // Exited threads keep their last sample.
    slot.name = e.name;
    slot.seconds = std::max(slot.seconds, e.seconds);
  }
}

}  // namespace migmover::bench
