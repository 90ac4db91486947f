// `migmoverctl fsm-path`: prints the walk the kernel takes between two migration states.
#ifndef MIGMOVER_DAEMON_CLI_FSM_PATH_COMMAND_H_
#define MIGMOVER_DAEMON_CLI_FSM_PATH_COMMAND_H_

#include <ostream>
#include <string>
#include <vector>

namespace migmover {

// `features` is a comma list ("stop_copy,p2p,pre_copy"). With `all`, `args` must be empty and
// every (FROM, TO) pair is printed as "FROM\tTO\tPATH" (PATH: states joined by '>', or the errno
// name). Otherwise `args` is {FROM, TO} and the walk is printed as "A > B > C".
// Returns the process exit code: 0 on success, 1 when the kernel would refuse the request (the
// errno is named on `err`), 2 for a usage error.
// With `json`, the same as protobuf's JSON of ctl.FsmPathResult (ctl.FsmPathTable for `all`),
// a refused request included (exit code 1 still).
int RunFsmPathCommand(const std::string& features, bool all, const std::vector<std::string>& args,
                      std::ostream& out, std::ostream& err, bool json = false);

}  // namespace migmover

#endif  // MIGMOVER_DAEMON_CLI_FSM_PATH_COMMAND_H_
