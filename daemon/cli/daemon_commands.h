// migmoverctl's commands on the daemon itself: health (grpc.health.v1 Check: exit 0 only when
// SERVING) and info (GetDaemonInfo: version, features, transports, engine, limits). Exit codes
// as in session_commands.h.
#ifndef MIGMOVER_DAEMON_CLI_DAEMON_COMMANDS_H_
#define MIGMOVER_DAEMON_CLI_DAEMON_COMMANDS_H_

#include <ostream>
#include <string>
#include <vector>

#include "daemon/cli/ctl_options.h"

namespace migmover::ctl {

// Returns -1 when `command` is not a daemon command.
int RunDaemonCommand(const std::string& command, const std::vector<std::string>& args,
                     const CtlOptions& o, std::ostream& out, std::ostream& err);

}  // namespace migmover::ctl

#endif  // MIGMOVER_DAEMON_CLI_DAEMON_COMMANDS_H_
