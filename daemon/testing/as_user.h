// AsUser: runs a piece of a test as another uid, for the tests of who may use the daemon's unix
// sockets (SO_PEERCRED checks).
#ifndef MIGMOVER_DAEMON_TESTING_AS_USER_H_
#define MIGMOVER_DAEMON_TESTING_AS_USER_H_

#include <sys/types.h>

#include <functional>
#include <string>

namespace migmover::testing {

// Runs `child` in a forked process as uid and gid `id` with no supplementary groups (the caller
// must be root) and returns what it returns, at most 255 bytes, through a pipe; "setuid failed"
// if the process could not become `id`, "pipe failed" if there was no pipe. `child` should do
// little beyond socket calls: it runs in a fork of a multithreaded process.
std::string AsUser(uid_t id, const std::function<std::string()>& child);

}  // namespace migmover::testing

#endif  // MIGMOVER_DAEMON_TESTING_AS_USER_H_
