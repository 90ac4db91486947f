#include "daemon/testing/as_user.h"

#include <grp.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>

#include "transport/base/unique_fd.h"

namespace migmover::testing {

std::string AsUser(uid_t id, const std::function<std::string()>& child) {
  auto p = MakePipe();
  if (!p.ok()) return "pipe failed";
  const pid_t pid = ::fork();
  if (pid == 0) {
    std::string out = "setuid failed";
    if (::setgroups(0, nullptr) == 0 && ::setgid(id) == 0 && ::setuid(id) == 0) out = child();
    (void)!::write(p->write.get(), out.data(), std::min<size_t>(out.size(), 255));
    ::_exit(0);
  }
  p->write.Reset();
  std::string got;
  char buf[256];
  ssize_t n;
  while ((n = ::read(p->read.get(), buf, sizeof(buf))) > 0) got.append(buf, n);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return got;
}

}  // namespace migmover::testing
