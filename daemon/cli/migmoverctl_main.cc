// migmoverctl: the operator's command-line tool for migmover.
#include <algorithm>
#include <cstdint>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "daemon/cli/ctl_client.h"
#include "daemon/cli/ctl_options.h"
#include "daemon/cli/daemon_commands.h"
#include "daemon/cli/device_commands.h"
#include "daemon/cli/fsm_path_command.h"
#include "daemon/cli/migrate_command.h"
#include "daemon/cli/session_commands.h"
#include "daemon/device/sim/sim_device_spec.h"
#include "grpcpp/grpcpp.h"

ABSL_FLAG(std::string, socket, "/run/migmover/migmoverd.sock",
          "The daemon's gRPC socket (every command but migrate and fsm-path), or tls:HOST:PORT "
          "for a daemon's --grpc_listen (needs --tls_ca, --tls_cert, --tls_key)");
ABSL_FLAG(std::string, fd_socket, "/run/migmover/migmoverd-fd.sock",
          "attach --fd/--path: the daemon's fd intake socket (its --fd_socket)");
ABSL_FLAG(bool, json, false,
          "Print each reply as protobuf's JSON mapping, one object per line (watch: one per "
          "change; migrate: a summary after the report)");
ABSL_FLAG(std::string, sim, "", "attach: a simulated device with this spec (size=1GiB,...)");
ABSL_FLAG(int, fd, -1,
          "attach: hand over this fd of migmoverctl's own (left open across exec by the program "
          "that runs it), for --purpose");
ABSL_FLAG(std::string, path, "",
          "attach: open this file (a VFIO cdev such as /dev/vfio/devices/vfio0, a FIFO, a file) "
          "and hand it over, for --purpose");
ABSL_FLAG(std::string, purpose, "vfio-device",
          "attach --fd/--path: vfio-device (the daemon runs the FSM), save-data (source: the "
          "agent runs the FSM; read) or resume-data (destination; written)");
ABSL_FLAG(std::string, token, "",
          "start: the session's secret, as prepare printed it (hex) or --json showed it "
          "(base64). prepare: use this secret instead of a generated one");
ABSL_FLAG(std::string, final_state, "", "prepare: RUNNING (default) or STOP after the commit");
ABSL_FLAG(int64_t, downtime_limit_ms, -1,
          "start: expected downtime under which the session reports switchover_ready "
          "(default 300)");
ABSL_FLAG(int64_t, progress_timeout, -1,
          "start: seconds PRE_COPY may come no closer to switchover before the session ends "
          "DEADLINE_EXCEEDED (default 150; 0 = off)");
ABSL_FLAG(int64_t, completion_timeout, -1,
          "start: seconds the whole migration may take (default off)");
ABSL_FLAG(int64_t, completion_timeout_per_gib, -1,
          "start: seconds per GiB of device state, at least one GiB counted (default 800; 0 = "
          "off)");
ABSL_FLAG(bool, bar, false, "watch: draw the live progress line even when stdout is no terminal");
ABSL_FLAG(std::string, features, "stop_copy,p2p,pre_copy",
          "fsm-path: the device's migration features, a comma list of stop_copy, p2p, pre_copy");
ABSL_FLAG(bool, all, false, "fsm-path: print every (FROM, TO) pair as FROM<TAB>TO<TAB>PATH");
ABSL_FLAG(std::string, src_socket, "",
          "migrate: the source daemon's gRPC socket (or tls:HOST:PORT)");
ABSL_FLAG(std::string, dst_socket, "",
          "migrate: the destination daemon's gRPC socket (or tls:HOST:PORT)");
ABSL_FLAG(std::string, tls_ca, "",
          "tls: addresses: PEM CA the daemon's certificate must chain to (its --grpc_tls_ca's "
          "counterpart)");
ABSL_FLAG(std::string, tls_cert, "",
          "tls: addresses: PEM client certificate, signed by the daemon's --grpc_tls_ca");
ABSL_FLAG(std::string, tls_key, "", "tls: addresses: PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_server_name, "",
          "tls: addresses: the name the daemon's certificate must carry, when the address does "
          "not give it (an IP address: --socket=tls:ipv4:10.0.0.7:7412)");
ABSL_FLAG(std::string, peer, "",
          "start, migrate: the destination daemon's peer address (host:port, its --peer_listen)");
ABSL_FLAG(std::string, session, "", "migrate: session id (default: generated)");
ABSL_FLAG(int, devices, 1, "migrate: number of simulated devices");
ABSL_FLAG(std::string, src_spec, "size=1GiB",
          "migrate: simulated source device spec (size, chunk, seed, initial, dirty_rate, "
          "features, short_io, fail_arc, corrupt_at)");
ABSL_FLAG(std::string, dst_spec, "",
          "migrate: simulated destination device spec (default: the source's size/features)");
ABSL_FLAG(std::string, data_path, "",
          "prepare, start, migrate: auto, splice or copy (default: the daemons')");
ABSL_FLAG(uint32_t, chunk_size, 0,
          "prepare, start, migrate: bytes per DATA frame (default: the daemons')");
ABSL_FLAG(bool, precopy, true, "start, migrate: use PRE_COPY when the devices support it");
ABSL_FLAG(int, min_precopy_rounds, 1, "migrate: PRE_COPY rounds to wait for before switchover");
ABSL_FLAG(double, timeout, 300, "migrate: give up after this many seconds");
ABSL_FLAG(std::string, transport, "",
          "prepare, start, migrate: tcp or dpdk (both daemons need --dpdk_port; default: tcp)");
ABSL_FLAG(uint32_t, streams, 0,
          "start, migrate: connections each device's stream is striped over (0: the daemon's "
          "default)");
ABSL_FLAG(std::string, bandwidth, "0",
          "start, migrate: this migration's bandwidth cap in bytes per second, with units "
          "(200MB, 1GiB); 0 = unlimited (the daemon's --max_bandwidth still applies)");

namespace {
constexpr char kUsage[] =
    R"(migmoverctl: operate and inspect migmover. Every command that talks to a daemon takes
--socket (its gRPC socket, default /run/migmover/migmoverd.sock, or tls:HOST:PORT) and --json
(print each reply as protobuf's JSON mapping). Exit codes: 0 done, 1 the daemon refused (the
error names the RPC and its gRPC code) or the session did not succeed, 2 bad usage.

Devices:
  attach NAME --sim SPEC                      a simulated device
  attach NAME --fd N [--purpose P]            hand over migmoverctl's own fd N
  attach NAME --path PATH [--purpose P]       open PATH and hand it over
      P: vfio-device (default; the daemon runs the FSM), save-data (source, the agent runs the
      FSM), resume-data (destination). The fd goes over --fd_socket (api/FD_INTAKE.md).
  detach NAME
  devices                                     list attached devices

A migration, step by step (the agents' calls, for operators and scripts):
  prepare SESSION DEVICE... [--token T]       destination: devices to RESUMING; prints the
                                              session's secret (token) unless --token gave one
  start SESSION DEVICE... --peer HOST:PORT --token T [--precopy=false] [--bandwidth RATE]
        [--downtime_limit_ms N] [--progress_timeout S] [--completion_timeout S]
        [--completion_timeout_per_gib S] [--streams N] [--data_path P] [--transport T]
                                              source: connect and stream (PRE_COPY first)
  watch SESSION                               follow a session until it ends: a live progress
                                              line on a terminal (bytes, rate, what is left,
                                              expected downtime, READY once switchover-ready),
                                              a status line per change otherwise
  switchover SESSION                          the vCPUs are stopped: STOP_COPY, then commit
  get SESSION                                 one session's status (also: status)
  list                                        every session the daemon remembers
  cancel SESSION
  forget SESSION                              forget an ended session (frees its id)
  bandwidth SESSION RATE                      change a source session's cap (500MB, 1GiB; 0 =
                                              unlimited)
  resolve SESSION run|abandon
      Settle an IN_DOUBT destination session (its devices committed and held stopped, the
      source's CONFIRM never came): `run` only if the source session SUCCEEDED (its devices are
      stopped for good), `abandon` (reset the devices here) if it FAILED or was cancelled. Ask
      the source first: running here while it runs is the one outcome that must never happen.

The daemon:
  health                                      grpc.health.v1: exit 0 only when SERVING
  info                                        version, features, transports, limits

Without a daemon:
  fsm-path [--features F] FROM TO
      Print the walk the kernel's VFIO migration FSM takes from FROM to TO for a device with
      features F (default stop_copy,p2p,pre_copy), e.g. RUNNING > RUNNING_P2P > STOP > STOP_COPY.
      Exits 1 naming the errno (EINVAL) when the kernel would refuse the request.
  fsm-path [--features F] --all
      Print every pair, one per line: FROM<TAB>TO<TAB>PATH, PATH being the states joined by '>'
      (the start state alone for a no-op) or the errno name.
  migrate --src_socket S --dst_socket D --peer HOST:PORT [--devices N] [--src_spec SPEC]
      Act as the agents of both hosts: migrate N simulated devices from daemon S to daemon D
      (PRE_COPY, switchover, STOP_COPY, commit) and report bytes, throughput, STOP_COPY
      downtime and the destination's verification. Exits 0 only if all of that succeeded.

States: ERROR STOP RUNNING STOP_COPY RESUMING RUNNING_P2P PRE_COPY PRE_COPY_P2P)";

std::optional<uint32_t> OptionalSeconds(int64_t flag) {
  if (flag < 0) return std::nullopt;
  return static_cast<uint32_t>(std::min<int64_t>(flag, UINT32_MAX));
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(kUsage);
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  std::vector<std::string> args(positional.begin() + 1, positional.end());
  if (args.empty()) {
    std::cerr << kUsage << "\n";
    return 2;
  }
  std::string command = args.front();
  args.erase(args.begin());
  const bool wants_tls = absl::StartsWith(absl::GetFlag(FLAGS_socket), "tls:") ||
                         absl::StartsWith(absl::GetFlag(FLAGS_src_socket), "tls:") ||
                         absl::StartsWith(absl::GetFlag(FLAGS_dst_socket), "tls:");
  if (wants_tls) {
    absl::Status tls = migmover::ctl::UseTls({absl::GetFlag(FLAGS_tls_ca),
                                             absl::GetFlag(FLAGS_tls_cert),
                                             absl::GetFlag(FLAGS_tls_key),
                                             {}},
                                            absl::GetFlag(FLAGS_tls_server_name));
    if (!tls.ok()) {
      std::cerr << "migmoverctl: a tls: address needs --tls_ca, --tls_cert and --tls_key: "
                << tls.message() << "\n";
      return 2;
    }
  }
  auto bandwidth = migmover::sim::ParseByteSize(absl::GetFlag(FLAGS_bandwidth));
  if (!bandwidth.ok()) {
    std::cerr << command << ": --bandwidth: " << bandwidth.status().message() << "\n";
    return 2;
  }
  if (command == "fsm-path") {
    return migmover::RunFsmPathCommand(absl::GetFlag(FLAGS_features), absl::GetFlag(FLAGS_all),
                                       args, std::cout, std::cerr, absl::GetFlag(FLAGS_json));
  }
  if (command == "migrate") {
    migmover::MigrateOptions o;
    o.src_socket = absl::GetFlag(FLAGS_src_socket);
    o.dst_socket = absl::GetFlag(FLAGS_dst_socket);
    o.peer = absl::GetFlag(FLAGS_peer);
    o.session_id = absl::GetFlag(FLAGS_session);
    o.devices = absl::GetFlag(FLAGS_devices);
    o.src_spec = absl::GetFlag(FLAGS_src_spec);
    o.dst_spec = absl::GetFlag(FLAGS_dst_spec);
    o.data_path = absl::GetFlag(FLAGS_data_path);
    o.chunk_size = absl::GetFlag(FLAGS_chunk_size);
    o.precopy = absl::GetFlag(FLAGS_precopy);
    o.min_precopy_rounds = absl::GetFlag(FLAGS_min_precopy_rounds);
    o.timeout_seconds = absl::GetFlag(FLAGS_timeout);
    o.json = absl::GetFlag(FLAGS_json);
    o.streams = absl::GetFlag(FLAGS_streams);
    o.transport = absl::GetFlag(FLAGS_transport);
    o.bandwidth = *bandwidth;
    return migmover::RunMigrateCommand(o, std::cout, std::cerr);
  }
  migmover::ctl::CtlOptions o;
  o.socket = absl::GetFlag(FLAGS_socket);
  o.fd_socket = absl::GetFlag(FLAGS_fd_socket);
  o.json = absl::GetFlag(FLAGS_json);
  o.sim = absl::GetFlag(FLAGS_sim);
  o.fd = absl::GetFlag(FLAGS_fd);
  o.path = absl::GetFlag(FLAGS_path);
  o.purpose = absl::GetFlag(FLAGS_purpose);
  o.token = absl::GetFlag(FLAGS_token);
  o.final_state = absl::GetFlag(FLAGS_final_state);
  o.peer = absl::GetFlag(FLAGS_peer);
  o.precopy = absl::GetFlag(FLAGS_precopy);
  o.bandwidth = *bandwidth;
  o.downtime_limit_ms = OptionalSeconds(absl::GetFlag(FLAGS_downtime_limit_ms));
  o.progress_timeout_s = OptionalSeconds(absl::GetFlag(FLAGS_progress_timeout));
  o.completion_timeout_s = OptionalSeconds(absl::GetFlag(FLAGS_completion_timeout));
  o.completion_timeout_per_gib_s = OptionalSeconds(absl::GetFlag(FLAGS_completion_timeout_per_gib));
  o.data_path = absl::GetFlag(FLAGS_data_path);
  o.transport = absl::GetFlag(FLAGS_transport);
  o.streams = absl::GetFlag(FLAGS_streams);
  o.chunk_size = absl::GetFlag(FLAGS_chunk_size);
  o.force_bar = absl::GetFlag(FLAGS_bar);
  for (auto* run : {&migmover::ctl::RunSessionCommand, &migmover::ctl::RunDeviceCommand,
                    &migmover::ctl::RunDaemonCommand}) {
    const int code = (*run)(command, args, o, std::cout, std::cerr);
    if (code >= 0) return code;
  }
  std::cerr << "migmoverctl: unknown command '" << command << "'\n\n" << kUsage << "\n";
  return 2;
}
