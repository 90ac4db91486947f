// `migmoverctl migrate`: plays the hypervisor agents of both hosts against two running daemons:
// attaches simulated devices on each, prepares the destination, starts the source, waits for
// PRE_COPY rounds, switches over, and reports what moved, how fast, the STOP_COPY downtime and
// whether the destination verified every stream.
#ifndef MIGMOVER_DAEMON_CLI_MIGRATE_COMMAND_H_
#define MIGMOVER_DAEMON_CLI_MIGRATE_COMMAND_H_

#include <ostream>
#include <string>

namespace migmover {

struct MigrateOptions {
  std::string src_socket;
  std::string dst_socket;
  std::string peer;        // The destination daemon's peer address.
  std::string session_id;  // Empty: a generated one.
  int devices = 1;
  std::string src_spec = "size=1GiB";
  std::string dst_spec;   // Empty: the source spec's size with default behaviour.
  std::string data_path;  // Empty: the daemons' default.
  uint32_t chunk_size = 0;
  bool precopy = true;
  int min_precopy_rounds = 1;
  double timeout_seconds = 300;
  bool json = false;
  uint64_t bandwidth = 0;  // Bytes per second, 0 = unlimited.
  uint32_t streams = 0;    // Connections per device; 0 = the daemon's default.
  std::string transport;   // "tcp" (default) or "dpdk" (both daemons need --dpdk_port).
};

// Returns the exit code: 0 only if the migration succeeded on both sides and the destination
// verified every stream.
int RunMigrateCommand(const MigrateOptions& options, std::ostream& out, std::ostream& err);

}  // namespace migmover

#endif  // MIGMOVER_DAEMON_CLI_MIGRATE_COMMAND_H_
