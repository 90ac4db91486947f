// What migmoverctl's flags say, handed to each command (the flags themselves live in
// migmoverctl_main.cc, and each is documented there and in `migmoverctl --help`).
#ifndef MIGMOVER_DAEMON_CLI_CTL_OPTIONS_H_
#define MIGMOVER_DAEMON_CLI_CTL_OPTIONS_H_

#include <cstdint>
#include <optional>
#include <string>

namespace migmover::ctl {

struct CtlOptions {
  std::string socket;     // The daemon's gRPC socket, or tls:HOST:PORT.
  std::string fd_socket;  // The daemon's fd intake socket (attach --fd/--path).
  bool json = false;      // Print protobuf's JSON mapping of each reply.
  // attach
  std::string sim;          // A simulated device's spec.
  int fd = -1;              // One of migmoverctl's own fds to hand over.
  std::string path;         // A file to open and hand over.
  std::string purpose = "vfio-device";
  // prepare / start
  std::string token;        // Hex or base64; prepare: empty = the daemon generates one.
  std::string final_state;  // prepare: RUNNING (default) or STOP.
  std::string peer;         // start: the destination daemon's host:port.
  bool precopy = true;
  uint64_t bandwidth = 0;   // start: bytes per second, 0 = unlimited.
  std::optional<uint32_t> downtime_limit_ms;
  std::optional<uint32_t> progress_timeout_s;
  std::optional<uint32_t> completion_timeout_s;
  std::optional<uint32_t> completion_timeout_per_gib_s;
  std::string data_path;
  std::string transport;
  uint32_t streams = 0;
  uint32_t chunk_size = 0;
  // watch: draw the live bar even when stdout is not a terminal (for tests).
  bool force_bar = false;
};

}  // namespace migmover::ctl

#endif  // MIGMOVER_DAEMON_CLI_CTL_OPTIONS_H_
