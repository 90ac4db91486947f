// migmoverctl's commands on sessions: prepare, start, switchover, watch, get (status), list,
// cancel, forget, bandwidth, resolve. Each sends one RPC (watch follows a stream), prints the
// reply (a status line and a line per device, or protobuf's JSON with --json), and returns the
// exit code: 0 on success, 1 when the daemon refused or the session did not succeed (watch),
// 2 for a usage error (named on `err`).
#ifndef MIGMOVER_DAEMON_CLI_SESSION_COMMANDS_H_
#define MIGMOVER_DAEMON_CLI_SESSION_COMMANDS_H_

#include <ostream>
#include <string>
#include <vector>

#include "daemon/cli/ctl_options.h"

namespace migmover::ctl {

// `command` is one of the names above ("status" is get's older name); `args` what follows it.
// Returns -1 when `command` is not a session command. watch draws its bar when stdout is a
// terminal (or o.force_bar).
int RunSessionCommand(const std::string& command, const std::vector<std::string>& args,
                      const CtlOptions& o, std::ostream& out, std::ostream& err);

// The width of the terminal `fd` is, or 0 when it is none (or TERM=dumb): where watch draws
// plain lines.
int TerminalWidth(int fd);

// watch's rendering, given whether stdout is a terminal and its width: on a terminal one line
// redrawn in place (ProgressLine), ended by a newline and the final status; otherwise a status
// line per change. Exposed for tests.
int Watch(const std::string& session, const CtlOptions& o, bool terminal, int width,
          std::ostream& out, std::ostream& err);

}  // namespace migmover::ctl

#endif  // MIGMOVER_DAEMON_CLI_SESSION_COMMANDS_H_
