// migmoverd: the migmover daemon. One per host.
#include <malloc.h>
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <iostream>
#include <memory>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "daemon/api/migmover_service.h"
#include "daemon/base/log.h"
#include "daemon/base/memory_budget.h"
#include "daemon/device/sim/sim_device_spec.h"
#include "daemon/base/version.h"
#include "daemon/intake/fd_intake.h"
#include "daemon/metrics/prometheus_metrics.h"
#include "daemon/peer/peer_acceptor.h"
#include "daemon/registry/device_registry.h"
#include "daemon/session/session_manager.h"
#include <systemd/sd-daemon.h>

#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "transport/api/transport_set.h"
#include "transport/dpdk/dpdk_transport.h"
#include "transport/net/socket.h"
#include "transport/io/io_engine.h"
#include "transport/stream/pump_pool.h"
#include "transport/io/io_queue_factory.h"
#include "transport/stream/data_path.h"
#include "transport/stream/data_path_probe.h"
#include "transport/tcp/tcp_transport.h"
#include "daemon/access/local_access.h"
#include "transport/tls/tls_context.h"
#include "daemon/api/grpc_tls.h"
#include "daemon/api/grpc_unix_listener.h"

ABSL_FLAG(std::string, grpc_socket, "/run/migmover/migmoverd.sock",
          "Unix socket path of the gRPC API (api/migmover.proto) for the hypervisor agent.");
ABSL_FLAG(std::string, fd_socket, "/run/migmover/migmoverd-fd.sock",
          "Unix socket path on which the agent passes device and data fds (SCM_RIGHTS); see "
          "api/FD_INTAKE.md. Empty disables fd intake.");
ABSL_FLAG(std::string, socket_mode, "0660",
          "Permission bits (octal) of both unix sockets. The files are created with these bits "
          "and never more, whatever the umask; the kernel checks them at connect.");
ABSL_FLAG(std::string, allowed_uids, "",
          "Users (numbers or names, comma-separated) that may use the gRPC and fd sockets, "
          "besides root and the daemon's own user. Checked on every connection against the "
          "peer's credentials (SO_PEERCRED), after the socket's mode; a refused connection is "
          "closed and logged with its pid and uid.");
ABSL_FLAG(std::string, allowed_gids, "",
          "Groups (numbers or names, comma-separated) whose members, by primary or "
          "supplementary group, may use the gRPC and fd sockets.");
ABSL_FLAG(std::string, grpc_listen, "",
          "HOST:PORT on which the gRPC API also listens over TCP, for agents on other hosts "
          "(empty: the unix socket only). Always mutual TLS: --grpc_tls_ca, --grpc_tls_cert and "
          "--grpc_tls_key are required, and a client must present a certificate --grpc_tls_ca "
          "signed. SO_PEERCRED cannot apply over TCP: the certificate is the credential.");
ABSL_FLAG(std::string, grpc_tls_ca, "",
          "--grpc_listen: PEM CA that agents' client certificates must chain to.");
ABSL_FLAG(std::string, grpc_tls_cert, "",
          "--grpc_listen: PEM certificate chain the daemon presents to agents.");
ABSL_FLAG(std::string, grpc_tls_key, "", "--grpc_listen: PEM private key of --grpc_tls_cert.");
ABSL_FLAG(std::string, grpc_tls_client_names, "",
          "--grpc_listen: comma-separated names (certificate CN or DNS SAN) of the agents allowed "
          "to call; empty: any certificate --grpc_tls_ca signed. Other calls fail with "
          "PERMISSION_DENIED and are logged.");
ABSL_FLAG(uint32_t, fd_handle_ttl_s, 60,
          "Seconds an fd passed over --fd_socket waits for its AttachDevice; then its handle "
          "expires and the fd is closed (1..3600).");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM file of the CA that signs the peer daemons' certificates: every peer connection "
          "(streams, heartbeat, DPDK's HELLO) runs TLS 1.3 with mutual authentication. With "
          "--tls_cert and --tls_key. Peer TLS is required: these, --tls_psk_file, or "
          "--plaintext_peers.");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain this daemon presents to its peers.");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert.");
ABSL_FLAG(std::string, tls_peer_names, "",
          "Names (comma-separated) a peer's certificate must carry (DNS subjectAltName, or the "
          "common name); empty: any certificate --tls_ca signed.");
ABSL_FLAG(std::string, tls_psk_file, "",
          "Instead of certificates: a file holding a pre-shared key of at least 32 bytes, the "
          "same on every daemon (TLS 1.3 external PSK).");
ABSL_FLAG(bool, plaintext_peers, false,
          "Run peer connections without TLS: the device state crosses the network unencrypted "
          "(the session secret never does: HELLOs prove it; a keyed digest checks every byte, "
          "so streams keep to the copy path), and every log line says PLAINTEXT-PEERS. Only "
          "for a network you trust entirely.");
ABSL_FLAG(std::string, peer_listen, "0.0.0.0:7411",
          "host:port on which this daemon accepts migration streams from source daemons. Port 0 "
          "picks a free port (see --port_file).");
ABSL_FLAG(std::string, port_file, "",
          "If set, the bound peer port is written to this file once the daemon is ready.");
ABSL_FLAG(std::string, data_path, "auto",
          "Default data path for sessions that do not choose one: auto (splice where the fd "
          "allows it, copy otherwise), splice, or copy (registered buffers).");
ABSL_FLAG(bool, probe_data_path, true,
          "With --data_path=auto: at start-up, measure splice against copy through this engine "
          "(pipe into loopback TCP, 3 trials each, ~0.3 s) and let auto splice fds that can "
          "only if splice was at least 10% faster (logged with the margin). Off: auto splices "
          "wherever it can.");
ABSL_FLAG(std::string, io_engine, "auto",
          "What carries the copy path's reads, writes, sends and receives: uring (io_uring; "
          "refused where sysctl kernel.io_uring_disabled or a seccomp profile forbids it, and "
          "then the daemon does not start), syscalls (ppoll and nonblocking calls: works "
          "everywhere, costs more CPU per byte), or auto (io_uring if this process may use it, "
          "else syscalls; the choice and the reason are logged at start-up).");
ABSL_FLAG(uint32_t, streams, 0,
          "Default connections each device's stream is striped over (1..16); 0 picks one per "
          "two cores, at most 4.");
ABSL_FLAG(uint32_t, workers, 0,
          "Pump threads (1..64) that move the copy-path data of every session on this host, "
          "each with one I/O queue (see --io_engine); a session's devices spread over as many "
          "as it asks (TransferOptions.workers; sources default to all of them); 0 = one per "
          "core.");
ABSL_FLAG(bool, send_zc, false,
          "Copy path: send with io_uring SEND_ZC from the stream's buffers (zero copy to the "
          "NIC). Off by default: it only pays with real NICs and large frames, never on "
          "loopback.");
ABSL_FLAG(uint32_t, chunk_size, 256u << 10,
          "Default bytes per DATA frame and per read of a data fd (4096..16777216). 256 KiB keeps "
          "a frame in the core's cache from the read through the send and the digest; a session "
          "may choose its own (TransferOptions.chunk_size).");
ABSL_FLAG(std::string, tcp_congestion, "",
          "TCP congestion control of the data connections, e.g. cubic or bbr (one of "
          "/proc/sys/net/ipv4/tcp_available_congestion_control); empty = the system's default. "
          "BBR paces every packet with a timer, which on loopback cost a third of a raw "
          "loop's throughput on the machines we measured (bench/README.md).");
ABSL_FLAG(uint32_t, idle_timeout_ms, 30000,
          "A stream that makes no progress for this long fails (milliseconds).");
ABSL_FLAG(uint32_t, peer_timeout_ms, 4000,
          "How long the peer daemon may stay silent (milliseconds, 1000..3600000, or 0). Each "
          "session keeps a heartbeat with its peer daemon (PING/PONG several times per timeout, "
          "answered by the daemons' own threads): a peer daemon that hangs or is cut off fails "
          "the migration within this long in every phase, idle or not. Every peer connection "
          "also fails after this long with data or keepalive probes (one a second while idle) "
          "unacknowledged, or a receive window held shut (TCP_USER_TIMEOUT): so does a "
          "destination that stops reading (its device stalled) while the source has data to "
          "send, not after --idle_timeout_ms. 0 = the kernel's keepalive defaults (about 25 s) "
          "and a heartbeat timeout of --idle_timeout_ms.");
ABSL_FLAG(std::string, dpdk_port, "",
          "DPDK port for device streams a migration asks to move over DPDK (TransferOptions."
          "transport = \"dpdk\"), as DPDK device arguments, e.g. "
          "\"net_memif0,role=server,socket=migmover-memif\" here and role=client on the peer "
          "daemon (api/DPDK_LINK.md). Empty: no DPDK; such migrations are refused.");
ABSL_FLAG(int32_t, dpdk_memory_mb, 512,
          "Memory DPDK reserves for its frame buffers, in MiB (anonymous memory unless "
          "--dpdk_hugepages).");
ABSL_FLAG(bool, dpdk_hugepages, false, "Back DPDK's memory with hugepages (a NIC needs them).");
ABSL_FLAG(uint32_t, dpdk_frame_size, 0,
          "Bytes per DPDK frame, Ethernet header included: 0 = 32768 on net_memif, 9216 (jumbo) "
          "elsewhere. At most the port's MTU + 14 (net_af_packet: its framesz - 32).");
ABSL_FLAG(uint32_t, dpdk_queues, 1,
          "Queue pairs on the DPDK port (1..16); a session's devices spread over them. Give both "
          "daemons of a pair the same count. (On memif, 4 measured no faster than 1.)");
ABSL_FLAG(uint32_t, max_sessions, 64,
          "Sessions (source and destination) that may run at once, IN_DOUBT ones included; "
          "PrepareDestination and StartSource beyond it fail with RESOURCE_EXHAUSTED (1..1024).");
ABSL_FLAG(uint32_t, session_retention_s, 3600,
          "Seconds an ended session stays queryable (GetSession, ListSessions) and its id taken; "
          "ForgetSession frees it sooner. At most the 64 most recently ended are kept (1..604800).");
ABSL_FLAG(uint32_t, reconnect_window_ms, 5000,
          "How long a device stream survives a lost connection (milliseconds, 0..600000): the "
          "source reconnects (authenticated as at first) and goes on from the bytes the "
          "destination's device has, and the destination waits this long for it; each blip "
          "gets its own window. The heartbeat is lost only after --peer_timeout_ms plus this. "
          "A migration's TransferOptions.reconnect_window_ms overrides it (per side). Streams "
          "that can resume take the copy path (not splice). 0: a lost connection fails the "
          "migration at once (api/PEER_PROTOCOL.md, \"Resume\").");
ABSL_FLAG(std::string, replay_buffer, "16MiB",
          "Source: the stream bytes each device may have out that the destination has not yet "
          "written into its device (with units: 64MiB). A data fd cannot be rewound, so a "
          "resume sends these again from this buffer; when it is full the stream waits for "
          "the destination's acknowledgement (every 1 MiB it writes, and every 100 ms). Per "
          "device, charged to --max_memory; used only with a reconnect window. It must hold "
          "what is in flight between the two devices (both hosts' socket buffers and the "
          "destination's writes): smaller slows the stream (bench/README.md); 4MiB..4GiB.");
ABSL_FLAG(std::string, max_memory, "",
          "Memory this daemon's devices and running sessions may hold at once, with units "
          "(512MiB, 8GiB): a simulated device's bookkeeping, each session's stream buffers "
          "(devices x streams x (buffers + 1) x chunk size). An AttachDevice or session that "
          "would pass it fails with RESOURCE_EXHAUSTED and changes nothing. Empty: a quarter of "
          "this machine's memory (at least 256MiB); 0: no limit.");
ABSL_FLAG(std::string, max_bandwidth, "0",
          "Host-wide cap on what all source sessions send together, in bytes per second with "
          "units (1GB, 500MiB): split fairly among the sessions sending at once (max-min: a "
          "session held below its part by its own cap, device or peer leaves the rest to the "
          "others); each session's own cap still applies. 0: no host cap; otherwise 1MB..10TB.");
ABSL_FLAG(std::string, metrics_listen, "",
          "HOST:PORT on which Prometheus metrics are served over plain HTTP at /metrics "
          "(sessions by role and result, active sessions, bytes by direction and phase, "
          "durations and switchover downtime as histograms, device FSM arc failures; no session "
          "ids). Empty: off. Unauthenticated: bind it to loopback or a management network.");
ABSL_FLAG(std::string, log_level, "info", "debug, info, warning or error.");
ABSL_FLAG(std::string, log_format, "text",
          "text (a line per event for people), kv (logfmt: ts= level= daemon= msg= and the "
          "event's fields: session=, device=, from=, to=, errno=, code=) or json (one object per "
          "line with the same keys). Every value is escaped: a peer's text cannot forge a field "
          "or a line.");
ABSL_FLAG(std::string, name, "migmoverd", "Name shown in every log line.");

namespace {

std::atomic<bool> g_stop{false};

void OnSignal(int) { g_stop = true; }

absl::Status EnsureParentDir(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos || slash == 0) return absl::OkStatus();
  std::string dir = path.substr(0, slash);
  struct stat st;
  if (::stat(dir.c_str(), &st) == 0) return absl::OkStatus();
  if (::mkdir(dir.c_str(), 0750) != 0 && errno != EEXIST) {
    return absl::InternalError(absl::StrCat("mkdir(", dir, "): ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

int Fail(const absl::Status& s) {
  MM_LOG(ERROR) << "cannot start: " << s;
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  // glibc gives threads their own malloc arenas (up to 8 per core) and keeps what they freed:
  // with session threads coming and going, the destination's RSS grew from 30 to 41 MB over
  // 1000 failed migrations, flat (+0.2 MB) with one arena (tests/integration/leak_test.cc).
  // The data path allocates nothing, so two arenas cost no contention. MALLOC_ARENA_MAX wins.
  if (std::getenv("MALLOC_ARENA_MAX") == nullptr) ::mallopt(M_ARENA_MAX, 2);
  absl::SetProgramUsageMessage(
      "live-migrates the state of VFIO devices between two hosts.\n\n"
      "A hypervisor agent passes device (or migration data) fds over --fd_socket and drives\n"
      "migrations over the gRPC API on --grpc_socket (api/migmover.proto). Source daemons\n"
      "connect to a destination daemon's --peer_listen address to stream device state.\n\n"
      "Peer connections run TLS 1.3 with mutual authentication: give every daemon a CA, its\n"
      "certificate and key (--tls_ca, --tls_cert, --tls_key, and --tls_peer_names to name the\n"
      "peers it accepts), or the same pre-shared key (--tls_psk_file). The daemon refuses to\n"
      "start without them unless --plaintext_peers says the network is trusted (deploy/SECURITY.md).\n\n"
      "Example (two daemons on one host):\n"
      "  migmoverd --grpc_socket=/tmp/src.sock --fd_socket=/tmp/src-fd.sock "
      "--peer_listen=127.0.0.1:7411 --tls_psk_file=/etc/migmover/psk\n"
      "  migmoverd --grpc_socket=/tmp/dst.sock --fd_socket=/tmp/dst-fd.sock "
      "--peer_listen=127.0.0.1:7412 --tls_psk_file=/etc/migmover/psk\n\n"
      "Device streams over DPDK instead of TCP (api/DPDK_LINK.md): add\n"
      "  --dpdk_port=net_memif0,role=server,socket=migmover-memif   (destination)\n"
      "  --dpdk_port=net_memif0,role=client,socket=migmover-memif   (source)\n"
      "and ask a migration for TransferOptions.transport = \"dpdk\".");
  absl::SetFlagsUsageConfig({.version_string = [] {
    return absl::StrCat("migmoverd ", migmover::kMigmoverVersion, "\n");
  }});
  absl::ParseCommandLine(argc, argv);
  // A daemon whose peers run in the clear says so on every line it logs.
  migmover::SetLogTag(absl::GetFlag(FLAGS_plaintext_peers)
                          ? absl::StrCat(absl::GetFlag(FLAGS_name), " PLAINTEXT-PEERS")
                          : absl::GetFlag(FLAGS_name));
  if (auto format = migmover::ParseLogFormat(absl::GetFlag(FLAGS_log_format)); format.ok()) {
    migmover::SetLogFormat(*format);
  } else {
    std::cerr << format.status().message() << "\n";
    return 2;
  }
  const std::string level = absl::GetFlag(FLAGS_log_level);
  if (level == "debug") {
    migmover::SetMinLogSeverity(migmover::LogSeverity::kDebug);
  } else if (level == "warning") {
    migmover::SetMinLogSeverity(migmover::LogSeverity::kWarning);
  } else if (level == "error") {
    migmover::SetMinLogSeverity(migmover::LogSeverity::kError);
  } else if (level != "info") {
    std::cerr << "--log_level: expected debug, info, warning or error\n";
    return 2;
  }
  ::signal(SIGPIPE, SIG_IGN);  // A peer or a data fd that went away is an error result.
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);

  migmover::ServiceDefaults defaults;
  auto path = migmover::stream::ParseDataPath(absl::GetFlag(FLAGS_data_path));
  if (!path.ok()) return Fail(path.status());
  defaults.stream.data_path = *path;
  defaults.stream.chunk_size = absl::GetFlag(FLAGS_chunk_size);
  if (defaults.stream.chunk_size < 4096 || defaults.stream.chunk_size > (16u << 20)) {
    return Fail(absl::InvalidArgumentError("--chunk_size must be within 4096..16777216"));
  }
  defaults.stream.idle_timeout = absl::Milliseconds(absl::GetFlag(FLAGS_idle_timeout_ms));
  if (const uint32_t t = absl::GetFlag(FLAGS_peer_timeout_ms);
      t > 3'600'000 || (t != 0 && t < 1000)) {
    return Fail(absl::InvalidArgumentError(
        "--peer_timeout_ms must be 0 or 1000..3600000 (1 s to 1 h): the heartbeat beats at "
        "most every 500 ms"));
  }
  defaults.stream.peer_timeout = absl::Milliseconds(absl::GetFlag(FLAGS_peer_timeout_ms));
  if (absl::GetFlag(FLAGS_reconnect_window_ms) > 600'000) {
    return Fail(absl::InvalidArgumentError("--reconnect_window_ms must be within 0..600000"));
  }
  defaults.stream.reconnect_window =
      absl::Milliseconds(absl::GetFlag(FLAGS_reconnect_window_ms));
  {
    auto replay = migmover::sim::ParseByteSize(absl::GetFlag(FLAGS_replay_buffer));
    if (!replay.ok()) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("--replay_buffer: ", replay.status().message())));
    }
    if (*replay < (4u << 20) || *replay > (uint64_t{4} << 30)) {
      return Fail(absl::InvalidArgumentError("--replay_buffer must be within 4MiB..4GiB"));
    }
    defaults.replay_bytes = *replay;
  }
  defaults.stream.send_zc = absl::GetFlag(FLAGS_send_zc);
  defaults.stream.tcp_congestion = absl::GetFlag(FLAGS_tcp_congestion);
  if (!defaults.stream.tcp_congestion.empty()) {
    if (absl::Status s = migmover::net::CheckCongestionControl(defaults.stream.tcp_congestion);
        !s.ok()) {
      return Fail(absl::InvalidArgumentError(absl::StrCat("--tcp_congestion: ", s.message())));
    }
  }
  auto engine = migmover::io::ParseIoEngine(absl::GetFlag(FLAGS_io_engine));
  if (!engine.ok()) return Fail(engine.status());
  auto choice = migmover::io::ChooseIoEngine(*engine);
  if (!choice.ok()) return Fail(choice.status());
  defaults.stream.io_engine = choice->engine;
  if (!choice->uring_refused.ok()) {
    MM_LOG(WARNING) << "io engine: syscalls, because io_uring is refused here ("
                    << choice->uring_refused.message()
                    << "); migrations work, at a higher CPU cost per byte (--io_engine)";
  } else {
    MM_LOG(INFO) << "io engine: " << migmover::io::IoEngineName(choice->engine)
                 << (*engine == migmover::io::IoEngine::kAuto ? " (auto)" : "");
  }
  defaults.workers = absl::GetFlag(FLAGS_workers);
  if (defaults.workers == 0) {
    defaults.workers = std::clamp(std::thread::hardware_concurrency(), 1u, 64u);
  }
  if (defaults.workers > 64) return Fail(absl::InvalidArgumentError("--workers must be 0..64"));
  defaults.streams = absl::GetFlag(FLAGS_streams);
  if (defaults.streams == 0) {
    defaults.streams = std::clamp(std::thread::hardware_concurrency() / 2, 1u, 4u);
  }
  if (defaults.streams > 16) return Fail(absl::InvalidArgumentError("--streams must be 1..16"));
  if (defaults.stream.data_path == migmover::stream::DataPath::kAuto &&
      absl::GetFlag(FLAGS_plaintext_peers)) {
    // Without TLS every stream keeps to the copy path (the keyed digest must see every byte):
    // nothing to choose, nothing to probe.
    defaults.stream.auto_spliceable = migmover::stream::DataPath::kCopy;
  } else if (defaults.stream.data_path == migmover::stream::DataPath::kAuto &&
             absl::GetFlag(FLAGS_probe_data_path)) {
    auto probe = migmover::stream::ProbeDataPaths(64ull << 20, 3, defaults.stream.chunk_size,
                                                  defaults.stream.io_engine);
    if (probe.ok()) {
      defaults.stream.auto_spliceable = probe->faster;
      MM_LOG(INFO) << "data path probe (pipe into loopback TCP, median of 3): copy "
                   << absl::StrFormat("%.2f", probe->copy_bytes_per_second / 1e9)
                   << " GB/s, splice "
                   << absl::StrFormat("%.2f", probe->splice_bytes_per_second / 1e9)
                   << absl::StrFormat(" GB/s (splice %+.0f%% vs copy; it needs %+.0f%%)",
                                      probe->splice_advantage * 100,
                                      migmover::stream::kSpliceMargin * 100)
                   << ": auto uses " << migmover::stream::DataPathName(probe->faster)
                   << " where an fd can splice (VFIO data fds always copy)";
    } else {
      // No evidence that splice is faster: the copy path, as for a probe within the margin.
      defaults.stream.auto_spliceable = migmover::stream::DataPath::kCopy;
      MM_LOG(WARNING) << "data path probe failed (" << probe.status()
                      << "); auto uses copy";
    }
  }

  // DPDK's EAL first: it must come up before this process starts long-lived threads. With the
  // pump workers started before rte_eal_init, a memif client crashed in its transmit path when
  // its peer died (tests/integration/dpdk_migration_test, DestinationDaemonKilled...).
  std::unique_ptr<migmover::dpdk::DpdkTransport> dpdk;
  if (!absl::GetFlag(FLAGS_dpdk_port).empty()) {
    auto started = migmover::dpdk::DpdkTransport::Start(
        {.devargs = absl::GetFlag(FLAGS_dpdk_port),
         .memory_mb = absl::GetFlag(FLAGS_dpdk_memory_mb),
         .hugepages = absl::GetFlag(FLAGS_dpdk_hugepages),
         .queues = static_cast<uint16_t>(std::clamp(absl::GetFlag(FLAGS_dpdk_queues), 1u, 16u)),
         .frame_size =
             static_cast<uint16_t>(std::min(absl::GetFlag(FLAGS_dpdk_frame_size), 65000u))});
    if (!started.ok()) return Fail(started.status());
    dpdk = std::move(*started);
  }
  // The host's pump workers, shared by every session (before the transports and sessions that
  // lease them, so it outlives both).
  auto pumps = migmover::stream::PumpPool::Create(defaults.workers, defaults.stream.io_engine);
  if (!pumps.ok()) return Fail(pumps.status());
  // The transports sessions may use: TCP always (the default, so first), DPDK with a port.
  migmover::transport::TcpTransport tcp(pumps->get());
  migmover::transport::TransportSet transports;
  transports.Add(&tcp);
  if (dpdk) {
    transports.Add(dpdk.get());
  } else {
    transports.AddMissing("dpdk",
                          "this daemon has no DPDK port (start migmoverd with --dpdk_port)");
  }
  defaults.transports = &transports;

  auto registry = std::make_unique<migmover::DeviceRegistry>();
  migmover::SessionLimits session_limits;
  session_limits.max_sessions = absl::GetFlag(FLAGS_max_sessions);
  if (session_limits.max_sessions < 1 || session_limits.max_sessions > 1024) {
    return Fail(absl::InvalidArgumentError("--max_sessions must be 1..1024"));
  }
  if (const uint32_t r = absl::GetFlag(FLAGS_session_retention_s); r < 1 || r > 604800) {
    return Fail(absl::InvalidArgumentError("--session_retention_s must be 1..604800"));
  }
  session_limits.retention = absl::Seconds(absl::GetFlag(FLAGS_session_retention_s));
  uint64_t max_memory = migmover::MemoryBudget::DefaultLimit();
  if (const std::string m = absl::GetFlag(FLAGS_max_memory); !m.empty()) {
    auto parsed = migmover::sim::ParseByteSize(m);
    if (!parsed.ok()) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("--max_memory: ", parsed.status().message())));
    }
    max_memory = *parsed;
  }
  defaults.memory = migmover::MemoryBudget::Create(max_memory);
  auto max_bandwidth = migmover::sim::ParseByteSize(absl::GetFlag(FLAGS_max_bandwidth));
  if (!max_bandwidth.ok()) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--max_bandwidth: ", max_bandwidth.status().message())));
  }
  if (*max_bandwidth != 0 && (*max_bandwidth < 1'000'000 || *max_bandwidth > 10'000'000'000'000)) {
    // Bytes, not bits: 1 is no cap anyone means, and a typo must not stall every migration.
    return Fail(absl::InvalidArgumentError(absl::StrCat(
        "--max_bandwidth=", absl::GetFlag(FLAGS_max_bandwidth),
        ": bytes per second, 0 (none) or 1MB..10TB")));
  }
  defaults.host_bandwidth = std::make_shared<migmover::stream::HostBandwidth>(*max_bandwidth);
  migmover::SessionManager sessions(session_limits, defaults.memory);

  uint32_t socket_mode = 0;
  if (const std::string m = absl::GetFlag(FLAGS_socket_mode);
      m.empty() || m.size() > 4 || m.find_first_not_of("01234567") != std::string::npos ||
      (socket_mode = static_cast<uint32_t>(std::stoul(m, nullptr, 8))) > 0777) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--socket_mode=", m, ": expected octal permission bits, e.g. 0660")));
  }
  auto access = migmover::LocalAccess::Parse(absl::GetFlag(FLAGS_allowed_uids),
                                             absl::GetFlag(FLAGS_allowed_gids));
  if (!access.ok()) return Fail(access.status());
  const uint32_t handle_ttl = absl::GetFlag(FLAGS_fd_handle_ttl_s);
  if (handle_ttl < 1 || handle_ttl > 3600) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--fd_handle_ttl_s=", handle_ttl, ": expected 1..3600")));
  }

  std::unique_ptr<migmover::FdIntake> intake;
  const std::string fd_socket = absl::GetFlag(FLAGS_fd_socket);
  if (!fd_socket.empty()) {
    if (auto s = EnsureParentDir(fd_socket); !s.ok()) return Fail(s);
    migmover::FdIntakeOptions intake_options;
    intake_options.socket_mode = socket_mode;
    intake_options.access = &*access;
    intake_options.handle_ttl = absl::Seconds(handle_ttl);
    auto started = migmover::FdIntake::Start(fd_socket, intake_options);
    if (!started.ok()) return Fail(started.status());
    intake = std::move(*started);
  }
  std::shared_ptr<const migmover::tls::TlsContext> tls;
  {
    migmover::tls::TlsConfig config;
    config.ca_file = absl::GetFlag(FLAGS_tls_ca);
    config.cert_file = absl::GetFlag(FLAGS_tls_cert);
    config.key_file = absl::GetFlag(FLAGS_tls_key);
    for (absl::string_view n :
         absl::StrSplit(absl::GetFlag(FLAGS_tls_peer_names), ',', absl::SkipWhitespace())) {
      config.peer_names.emplace_back(absl::StripAsciiWhitespace(n));
    }
    if (const std::string psk_file = absl::GetFlag(FLAGS_tls_psk_file); !psk_file.empty()) {
      std::ifstream in(psk_file, std::ios::binary);
      if (!in) {
        return Fail(absl::NotFoundError(absl::StrCat("--tls_psk_file=", psk_file, ": cannot read")));
      }
      config.psk.assign(std::istreambuf_iterator<char>(in), {});
      while (!config.psk.empty() && (config.psk.back() == '\n' || config.psk.back() == '\r')) {
        config.psk.pop_back();
      }
    }
    const bool any = !config.ca_file.empty() || !config.cert_file.empty() ||
                     !config.key_file.empty() || !config.psk.empty();
    if (any && absl::GetFlag(FLAGS_plaintext_peers)) {
      return Fail(absl::InvalidArgumentError(
          "--plaintext_peers with TLS credentials: choose one"));
    }
    if (any) {
      auto created = migmover::tls::TlsContext::Create(config);
      if (!created.ok()) return Fail(created.status());
      tls = std::move(*created);
    } else if (!absl::GetFlag(FLAGS_plaintext_peers)) {
      return Fail(absl::FailedPreconditionError(
          "peer connections need TLS credentials: --tls_ca, --tls_cert and --tls_key (with "
          "--tls_peer_names), or --tls_psk_file; --plaintext_peers runs them in the clear, for "
          "a network you trust entirely (deploy/SECURITY.md)"));
    } else if (defaults.stream.data_path == migmover::stream::DataPath::kSplice) {
      return Fail(absl::InvalidArgumentError(
          "--data_path=splice with --plaintext_peers: spliced bytes are checked only by TLS; "
          "without it the keyed digest must see every byte (use copy or auto)"));
    } else {
      MM_LOG(WARNING) << "--plaintext_peers: peer connections run WITHOUT TLS; device state "
                      << "crosses the network unencrypted and only the session secret's keyed "
                      << "digest protects it";
    }
  }
  defaults.tls = tls;
  auto peer_addr = migmover::net::ParseHostPort(absl::GetFlag(FLAGS_peer_listen));
  if (!peer_addr.ok()) return Fail(peer_addr.status());
  auto acceptor = migmover::PeerAcceptor::Start(
      *peer_addr, &sessions, tls,
      {defaults.stream.socket_buffer, defaults.stream.tcp_congestion, defaults.stream.peer_timeout});
  if (!acceptor.ok()) return Fail(acceptor.status());

  const std::string grpc_socket = absl::GetFlag(FLAGS_grpc_socket);
  if (auto s = EnsureParentDir(grpc_socket); !s.ok()) return Fail(s);
  defaults.io_engine =
      choice->uring_refused.ok()
          ? std::string(migmover::io::IoEngineName(choice->engine))
          : absl::StrCat("syscalls (io_uring refused: ", choice->uring_refused.message(), ")");
  defaults.peer_address = absl::StrCat(peer_addr->host, ":", (*acceptor)->port());
  defaults.grpc_tls = !absl::GetFlag(FLAGS_grpc_listen).empty();
  std::unique_ptr<migmover::PrometheusMetrics> metrics;
  if (const std::string listen = absl::GetFlag(FLAGS_metrics_listen); !listen.empty()) {
    auto started = migmover::PrometheusMetrics::Start(listen);
    if (!started.ok()) return Fail(started.status());
    metrics = std::move(*started);
    migmover::SetMetricsSink(metrics.get());
    defaults.metrics_address = metrics->address();
  }
  migmover::MigmoverService service(registry.get(), intake.get(), &sessions, defaults);
  // Both on purpose: orchestrators probe grpc.health.v1, and grpcurl-style tools discover the
  // API by reflection.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  // No listening port: the daemon accepts on the socket itself and hands gRPC each connection
  // its peer credentials allow (GrpcUnixListener).
  builder.RegisterService(&service);
  const std::string grpc_listen = absl::GetFlag(FLAGS_grpc_listen);
  int grpc_tcp_port = 0;
  migmover::GrpcTlsFiles grpc_tls{absl::GetFlag(FLAGS_grpc_tls_ca),
                                  absl::GetFlag(FLAGS_grpc_tls_cert),
                                  absl::GetFlag(FLAGS_grpc_tls_key),
                                  {}};
  for (absl::string_view n : absl::StrSplit(absl::GetFlag(FLAGS_grpc_tls_client_names), ',',
                                            absl::SkipWhitespace())) {
    grpc_tls.client_names.emplace_back(absl::StripAsciiWhitespace(n));
  }
  if (!grpc_listen.empty()) {
    if (auto hp = migmover::net::ParseHostPort(grpc_listen); !hp.ok()) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("--grpc_listen: ", hp.status().message())));
    }
    auto creds = migmover::GrpcServerTls(grpc_tls);
    if (!creds.ok()) {
      return Fail(absl::InvalidArgumentError(absl::StrCat(
          "--grpc_listen needs mutual TLS credentials (--grpc_tls_ca, --grpc_tls_cert, "
          "--grpc_tls_key): ",
          creds.status().message())));
    }
    builder.AddListeningPort(grpc_listen, *creds, &grpc_tcp_port);
  } else if (!grpc_tls.ca_file.empty() || !grpc_tls.cert_file.empty() ||
             !grpc_tls.key_file.empty() || !grpc_tls.client_names.empty()) {
    return Fail(absl::InvalidArgumentError("--grpc_tls_* given without --grpc_listen"));
  }
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server) return Fail(absl::UnavailableError("gRPC server did not start"));
  if (!grpc_listen.empty() && grpc_tcp_port == 0) {
    return Fail(absl::UnavailableError(
        absl::StrCat("gRPC could not listen on --grpc_listen=", grpc_listen)));
  }
  auto grpc_listener =
      migmover::GrpcUnixListener::Start(grpc_socket, socket_mode, &*access, server.get());
  if (!grpc_listener.ok()) return Fail(grpc_listener.status());
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  if (health != nullptr) {
    health->SetServingStatus(true);
    health->SetServingStatus(migmover::v1::Migmover::service_full_name(), true);
  }

  const std::string port_file = absl::GetFlag(FLAGS_port_file);
  if (!port_file.empty()) {
    std::ofstream(port_file + ".tmp") << (*acceptor)->port() << "\n";
    std::rename((port_file + ".tmp").c_str(), port_file.c_str());
  }
  MM_LOG(INFO) << "ready: migmoverd " << migmover::kMigmoverVersion << ", gRPC unix:" << grpc_socket
               << (grpc_listen.empty()
                       ? ""
                       : absl::StrCat(" and tcp:", grpc_listen, " (port ", grpc_tcp_port,
                                      ", mutual TLS, clients: ",
                                      grpc_tls.client_names.empty()
                                          ? "any certificate --grpc_tls_ca signed"
                                          : absl::StrJoin(grpc_tls.client_names, ", "),
                                      ")"))
               << ", fd intake "
               << (fd_socket.empty() ? "disabled" : "unix:" + fd_socket) << " (mode 0"
               << absl::StrFormat("%o", socket_mode) << ", " << access->Describe()
               << "), peer streams on "
               << peer_addr->host << ":" << (*acceptor)->port() << ", data path "
               << migmover::stream::DataPathName(defaults.stream.data_path)
               << (defaults.stream.data_path == migmover::stream::DataPath::kAuto
                       ? absl::StrCat(
                             " (", migmover::stream::DataPathName(defaults.stream.auto_spliceable),
                             " where an fd can splice)")
                       : "")
               << ", io engine " << migmover::io::IoEngineName(defaults.stream.io_engine)
               << ", " << defaults.workers << " pump worker(s) shared by all sessions"
               << ", TCP congestion control "
               << (defaults.stream.tcp_congestion.empty() ? "system default"
                                                          : defaults.stream.tcp_congestion)
               << ", DPDK " << (dpdk ? dpdk->Describe() : "off") << ", metrics "
               << (metrics ? absl::StrCat("http://", metrics->address(), "/metrics") : "off")
               << ", peers "
               << (tls ? absl::StrCat("TLS 1.3 with ", tls->Describe()) : "PLAINTEXT")
               << ", memory budget "
               << (max_memory ? absl::StrCat(max_memory, " bytes") : std::string("unlimited"))
               << ", host bandwidth cap "
               << (*max_bandwidth ? absl::StrCat(*max_bandwidth, " B/s") : std::string("off"));

  // Under systemd (Type=notify): ready now, and the watchdog fed from this loop, which also
  // notices SIGTERM. Outside systemd these calls do nothing.
  (void)sd_notify(0, "READY=1\nSTATUS=serving");
  uint64_t watchdog_usec = 0;
  absl::Duration feed_every = absl::InfiniteDuration();
  if (sd_watchdog_enabled(0, &watchdog_usec) > 0 && watchdog_usec > 0) {
    feed_every = absl::Microseconds(static_cast<int64_t>(watchdog_usec / 2));
    MM_LOG(INFO) << "systemd watchdog: fed every " << absl::FormatDuration(feed_every);
  }
  absl::Time fed = absl::InfinitePast();
  while (!g_stop.load()) {
    if (absl::Now() - fed >= feed_every) {
      (void)sd_notify(0, "WATCHDOG=1");
      fed = absl::Now();
    }
    absl::SleepFor(std::min(absl::Milliseconds(100), feed_every));
  }
  (void)sd_notify(0, "STOPPING=1");
  MM_LOG(INFO) << "shutting down: cancelling sessions";
  if (health != nullptr) health->Shutdown();  // NOT_SERVING from now on.
  sessions.CancelAll();
  // Sessions are over; give in-flight RPCs (watchers) a moment to see it, then cancel them.
  grpc_listener->reset();  // No new agent connections.
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(200));
  acceptor->reset();
  intake.reset();
  registry.reset();  // Closes every device fd; no session or RPC uses them any more.
  dpdk.reset();  // No session uses the port any more.
  migmover::SetMetricsSink(nullptr);
  metrics.reset();
  MM_LOG(INFO) << "stopped";
  // gRPC's library teardown waits up to seconds for its timer threads; every fd and device
  // is already released, so skip it.
  std::fflush(nullptr);
  std::_Exit(0);
}
