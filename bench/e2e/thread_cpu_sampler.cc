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

ThreadCpuSampler::ThreadCpuSampler(pid_t pid)
    : task_dir_(pid == 0 ? std::string("/proc/self/task") : absl::StrCat("/proc/", pid, "/task")),
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

void ThreadCpuSampler::Loop() {
  while (!stop_) {
    Sample();
    absl::SleepFor(absl::Milliseconds(5));
  }
}

void ThreadCpuSampler::Sample() {
  const double tick = static_cast<double>(::sysconf(_SC_CLK_TCK));
  DIR* d = ::opendir(task_dir_.c_str());
  if (d == nullptr) return;
  std::map<int, Entry> now;
  while (dirent* de = ::readdir(d)) {
    if (de->d_name[0] == '.') continue;
    std::ifstream f(absl::StrCat(task_dir_, "/", de->d_name, "/stat"));
    std::string line;
    if (!std::getline(f, line)) continue;
    size_t open = line.find('('), close = line.rfind(')');
    if (open == std::string::npos || close == std::string::npos) continue;
    std::istringstream rest(line.substr(close + 2));
    std::string tok;
    std::vector<std::string> fs;
    while (rest >> tok) fs.push_back(tok);
    if (fs.size() < 13) continue;
    now[std::atoi(de->d_name)] = {line.substr(open + 1, close - open - 1),
                                  (std::stod(fs[11]) + std::stod(fs[12])) / tick};
  }
  ::closedir(d);
  absl::MutexLock l(&mu_);
  for (auto& [tid, e] : now) {
    Entry& slot = last_[tid];  // Exited threads keep their last sample.
    slot.name = e.name;
    slot.seconds = std::max(slot.seconds, e.seconds);
  }
}

}  // namespace migmover::bench
