// migmoverctl: the operator's command-line tool for migmover.
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "daemon/cli/ctl_client.h"
#include "daemon/cli/fsm_path_command.h"
#include "daemon/cli/migrate_command.h"
#include "daemon/device/sim/sim_device_spec.h"
#include "grpcpp/grpcpp.h"

ABSL_FLAG(std::string, features, "stop_copy,p2p,pre_copy",
          "fsm-path: the device's migration features, a comma list of stop_copy, p2p, pre_copy");
ABSL_FLAG(bool, all, false, "fsm-path: print every (FROM, TO) pair as FROM<TAB>TO<TAB>PATH");
ABSL_FLAG(std::string, socket, "/run/migmover/migmoverd.sock",
          "devices/status/watch/cancel/switchover: the daemon's gRPC socket, or tls:HOST:PORT "
          "for a daemon's --grpc_listen (needs --tls_ca, --tls_cert, --tls_key)");
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
ABSL_FLAG(std::string, peer, "", "migrate: the destination daemon's peer address (host:port)");
ABSL_FLAG(std::string, session, "", "migrate: session id (default: generated)");
ABSL_FLAG(int, devices, 1, "migrate: number of simulated devices");
ABSL_FLAG(std::string, src_spec, "size=1GiB",
          "migrate: simulated source device spec (size, chunk, seed, initial, dirty_rate, "
          "features, short_io, fail_arc, corrupt_at)");
ABSL_FLAG(std::string, dst_spec, "",
          "migrate: simulated destination device spec (default: the source's size/features)");
ABSL_FLAG(std::string, data_path, "", "migrate: auto, splice or copy (default: the daemons')");
ABSL_FLAG(uint32_t, chunk_size, 0, "migrate: bytes per DATA frame (default: the daemons')");
ABSL_FLAG(bool, precopy, true, "migrate: use PRE_COPY when the devices support it");
ABSL_FLAG(int, min_precopy_rounds, 1, "migrate: PRE_COPY rounds to wait for before switchover");
ABSL_FLAG(double, timeout, 300, "migrate: give up after this many seconds");
ABSL_FLAG(bool, json, false, "migrate: also print a one-line JSON summary");
ABSL_FLAG(std::string, transport, "",
          "migrate: tcp or dpdk (both daemons need --dpdk_port; default: tcp)");
ABSL_FLAG(uint32_t, streams, 0,
          "migrate: connections each device's stream is striped over (0: the daemon's default)");
ABSL_FLAG(std::string, bandwidth, "0",
          "migrate: bandwidth cap per migration in bytes per second, with units (200MB, 1GiB); "
          "0 = unlimited");

namespace {
constexpr char kUsage[] =
    R"(migmoverctl: operate and inspect migmover.

Commands:
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
  devices [--socket S]          List the daemon's attached devices.
  status [--socket S] SESSION   Print a session's status.
  watch [--socket S] SESSION    Follow a session until it ends.
  switchover [--socket S] SESSION
  cancel [--socket S] SESSION
  resolve [--socket S] SESSION run|abandon
      Settle an IN_DOUBT destination session (its devices committed and held stopped, the
      source's CONFIRM never came): `run` only if the source session SUCCEEDED (its devices are
      stopped for good), `abandon` (reset the devices here) if it FAILED or was cancelled. Ask
      the source first: running here while it runs is the one outcome that must never happen.
  bandwidth [--socket S] SESSION RATE
      Change a running source session's bandwidth cap (bytes per second, units allowed: 500MB,
      1GiB; 0 = unlimited).

States: ERROR STOP RUNNING STOP_COPY RESUMING RUNNING_P2P PRE_COPY PRE_COPY_P2P)";

int SessionCommand(const std::string& command, const std::vector<std::string>& args) {
  if (args.size() != 1) {
    std::cerr << command << ": expected one SESSION argument\n";
    return 2;
  }
  const std::string socket = absl::GetFlag(FLAGS_socket);
  auto stub = migmover::ctl::Connect(socket);
  grpc::ClientContext ctx;
  migmover::v1::SessionStatus s;
  grpc::Status st;
  if (command == "status") {
    migmover::v1::GetSessionRequest req;
    req.set_session_id(args[0]);
    st = stub->GetSession(&ctx, req, &s);
  } else if (command == "cancel") {
    migmover::v1::CancelSessionRequest req;
    req.set_session_id(args[0]);
    st = stub->CancelSession(&ctx, req, &s);
  } else if (command == "switchover") {
    migmover::v1::SwitchoverRequest req;
    req.set_session_id(args[0]);
    st = stub->Switchover(&ctx, req, &s);
  } else {
    migmover::v1::WatchSessionRequest req;
    req.set_session_id(args[0]);
    auto reader = stub->WatchSession(&ctx, req);
    while (reader->Read(&s)) std::cout << migmover::ctl::StatusLine(s) << std::endl;
    st = reader->Finish();
    if (st.ok()) return s.phase() == migmover::v1::SessionStatus::SUCCEEDED ? 0 : 1;
  }
  if (!st.ok()) {
    std::cerr << migmover::ctl::FromGrpc(st, command, socket) << "\n";
    return 1;
  }
  std::cout << migmover::ctl::StatusLine(s) << "\n";
  for (const auto& d : s.devices()) {
    std::cout << "  " << d.name() << ": " << (d.state().empty() ? "-" : d.state()) << ", "
              << migmover::ctl::HumanBytes(d.bytes()) << ", path "
              << (d.data_path().empty() ? "-" : d.data_path())
              << (d.transport().empty() ? "" : " over " + d.transport())
              << (d.security().empty() ? "" : " (" + d.security() + ")")
              << (d.committed() ? ", committed" : "")
              << (d.error().empty() ? "" : ", error: " + d.error()) << "\n";
  }
  return 0;
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
  if (command == "fsm-path") {
    return migmover::RunFsmPathCommand(absl::GetFlag(FLAGS_features), absl::GetFlag(FLAGS_all),
                                       args, std::cout, std::cerr);
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
    auto bw = migmover::sim::ParseByteSize(absl::GetFlag(FLAGS_bandwidth));
    if (!bw.ok()) {
      std::cerr << "migrate: --bandwidth: " << bw.status().message() << "\n";
      return 2;
    }
    o.bandwidth = *bw;
    return migmover::RunMigrateCommand(o, std::cout, std::cerr);
  }
  if (command == "devices") {
    auto stub = migmover::ctl::Connect(absl::GetFlag(FLAGS_socket));
    grpc::ClientContext ctx;
    migmover::v1::ListDevicesResponse resp;
    grpc::Status st = stub->ListDevices(&ctx, migmover::v1::ListDevicesRequest(), &resp);
    if (!st.ok()) {
      std::cerr << migmover::ctl::FromGrpc(st, "ListDevices", absl::GetFlag(FLAGS_socket)) << "\n";
      return 1;
    }
    for (const auto& d : resp.devices()) {
      std::cout << d.name() << "\t" << migmover::v1::Device::Kind_Name(d.kind()) << "\t"
                << (d.state().empty() ? "-" : d.state()) << "\t"
                << (d.session_id().empty() ? "-" : d.session_id()) << "\t" << d.description()
                << "\n";
    }
    return 0;
  }
  if (command == "bandwidth") {
    if (args.size() != 2) {
      std::cerr << "bandwidth: expected SESSION RATE\n";
      return 2;
    }
    auto rate = migmover::sim::ParseByteSize(args[1]);
    if (!rate.ok()) {
      std::cerr << "bandwidth: " << rate.status().message() << "\n";
      return 2;
    }
    auto stub = migmover::ctl::Connect(absl::GetFlag(FLAGS_socket));
    grpc::ClientContext ctx;
    migmover::v1::SetBandwidthRequest req;
    req.set_session_id(args[0]);
    req.set_bytes_per_second(*rate);
    migmover::v1::SessionStatus s;
    grpc::Status st = stub->SetBandwidth(&ctx, req, &s);
    if (!st.ok()) {
      std::cerr << migmover::ctl::FromGrpc(st, "SetBandwidth", absl::GetFlag(FLAGS_socket)) << "\n";
      return 1;
    }
    std::cout << migmover::ctl::StatusLine(s) << ", cap "
              << (s.bandwidth_bytes_per_second()
                      ? migmover::ctl::HumanBytes(s.bandwidth_bytes_per_second()) + "/s"
                      : std::string("off"))
              << "\n";
    return 0;
  }
  if (command == "resolve") {
    if (args.size() != 2 || (args[1] != "run" && args[1] != "abandon")) {
      std::cerr << "resolve: expected SESSION run|abandon\n";
      return 2;
    }
    auto stub = migmover::ctl::Connect(absl::GetFlag(FLAGS_socket));
    grpc::ClientContext ctx;
    migmover::v1::ResolveSessionRequest req;
    req.set_session_id(args[0]);
    req.set_outcome(args[1] == "run" ? migmover::v1::ResolveSessionRequest::RUN
                                     : migmover::v1::ResolveSessionRequest::ABANDON);
    migmover::v1::SessionStatus s;
    grpc::Status st = stub->ResolveSession(&ctx, req, &s);
    if (!st.ok()) {
      std::cerr << migmover::ctl::FromGrpc(st, "ResolveSession", absl::GetFlag(FLAGS_socket))
                << "\n";
      return 1;
    }
    std::cout << migmover::ctl::StatusLine(s) << "\n";
    // 0 when the outcome asked for took effect (abandoning ends the session FAILED).
    const bool ran = s.phase() == migmover::v1::SessionStatus::SUCCEEDED;
    return ran == (args[1] == "run") ? 0 : 1;
  }
  if (command == "status" || command == "watch" || command == "cancel" || command == "switchover") {
    return SessionCommand(command, args);
  }
  std::cerr << "migmoverctl: unknown command '" << command << "'\n\n" << kUsage << "\n";
  return 2;
}
