// migmoverd's version: GetDaemonInfo, --version, the start-up log line.
#ifndef MIGMOVER_DAEMON_BASE_VERSION_H_
#define MIGMOVER_DAEMON_BASE_VERSION_H_

namespace migmover {

// Raised with every change an agent or operator can see (API, flags, metrics).
inline constexpr char kMigmoverVersion[] = "0.12.0";

}  // namespace migmover

#endif  // MIGMOVER_DAEMON_BASE_VERSION_H_
