#include "bench/e2e/child_process.h"

#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "transport/base/errno_status.h"

extern char** environ;

namespace migmover::bench {

absl::StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::Spawn(
    const std::string& path, const std::vector<std::string>& argv, const std::vector<FdAt>& fds) {
  auto pipe = MakePipe();
  if (!pipe.ok()) return pipe.status();
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, pipe->write.get(), 1);
  posix_spawn_file_actions_adddup2(&fa, pipe->write.get(), 2);
  for (const FdAt& f : fds) posix_spawn_file_actions_adddup2(&fa, f.ours, f.theirs);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::unique_ptr<ChildProcess> c(new ChildProcess());
  const bool search = path.find('/') == std::string::npos;
  const int err = search ? posix_spawnp(&c->pid_, path.c_str(), &fa, nullptr, args.data(), environ)
                         : posix_spawn(&c->pid_, path.c_str(), &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (err != 0) {
    c->pid_ = -1;
    if (err == ENOENT && search) {
      return absl::NotFoundError(
          absl::StrCat(path, " is not installed (Debian: apt-get install ", path, ")"));
    }
    return ErrnoStatus(absl::StrCat("posix_spawn(", path, ")"), err);
  }
  c->out_ = std::move(pipe->read);
  return c;
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
}

bool ChildProcess::ReadSome() {
  char buf[4096];
  ssize_t n = ::read(out_.get(), buf, sizeof(buf));
  if (n < 0 && errno == EINTR) return true;
  if (n <= 0) return false;
  output_.append(buf, n);
  return true;
}

bool ChildProcess::AwaitOutput(absl::string_view marker, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!absl::StrContains(output_, marker)) {
    pollfd p{out_.get(), POLLIN, 0};
    const int ms = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    if (ms <= 0 || ::poll(&p, 1, ms) <= 0) return false;
    if (!ReadSome()) return false;
  }
  return true;
}

int ChildProcess::Wait() {
  if (pid_ <= 0) return exit_code_;  // Reaped already: never waitpid(-1), another child's.
  while (ReadSome()) {
  }
  int status = 0;
  pid_t got;
  while ((got = ::waitpid(pid_, &status, 0)) < 0 && errno == EINTR) {
  }
  pid_ = -1;
  exit_code_ = got > 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return exit_code_;
}

}  // namespace migmover::bench
