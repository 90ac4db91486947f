// migmoverctl's commands on devices: attach, detach, devices (list). Exit codes as in
// session_commands.h.
#ifndef MIGMOVER_DAEMON_CLI_DEVICE_COMMANDS_H_
#define MIGMOVER_DAEMON_CLI_DEVICE_COMMANDS_H_

#include <ostream>
#include <string>
#include <vector>

#include "daemon/cli/ctl_options.h"

namespace migmover::ctl {

// attach NAME with exactly one of: o.sim (a simulated device's spec); o.fd (one of this
// process's fds, e.g. inherited from the agent that runs migmoverctl); o.path (opened here:
// read-write for vfio-device, read-only for save-data, write-only for resume-data; opening a
// FIFO waits for its other end, as open(2) does). An fd or path goes to the daemon's fd intake
// (o.fd_socket) for o.purpose, and the handle it answers is attached under NAME.
// Returns -1 when `command` is not a device command.
int RunDeviceCommand(const std::string& command, const std::vector<std::string>& args,
                     const CtlOptions& o, std::ostream& out, std::ostream& err);

}  // namespace migmover::ctl

#endif  // MIGMOVER_DAEMON_CLI_DEVICE_COMMANDS_H_
