#include "daemon/cli/daemon_commands.h"

#include "absl/strings/str_join.h"
#include "api/health.grpc.pb.h"
#include "daemon/cli/ctl_client.h"
#include "daemon/cli/ctl_output.h"
#include "daemon/cli/ctl_output.pb.h"
#include "grpcpp/grpcpp.h"

namespace migmover::ctl {
namespace {

int Health(const CtlOptions& o, std::ostream& out, std::ostream& err) {
  auto stub = grpc::health::v1::Health::NewStub(ConnectChannel(o.socket));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::health::v1::HealthCheckRequest req;  // "": the server as a whole.
  grpc::health::v1::HealthCheckResponse resp;
  grpc::Status st = stub->Check(&ctx, req, &resp);
  if (!st.ok()) return Refused(st, "grpc.health.v1.Health/Check", o.socket, err);
  HealthResult r;
  r.set_daemon(o.socket);
  r.set_status(grpc::health::v1::HealthCheckResponse::ServingStatus_Name(resp.status()));
  if (o.json) {
    PrintJson(r, out);
  } else {
    out << r.daemon() << ": " << r.status() << "\n";
  }
  return resp.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
}

int Info(const CtlOptions& o, std::ostream& out, std::ostream& err) {
  grpc::ClientContext ctx;
  v1::DaemonInfo info;
  grpc::Status st = Connect(o.socket)->GetDaemonInfo(&ctx, v1::GetDaemonInfoRequest(), &info);
  if (!st.ok()) return Refused(st, "GetDaemonInfo", o.socket, err);
  if (o.json) {
    PrintJson(info, out);
    return 0;
  }
  const auto& l = info.limits();
  out << "migmoverd " << info.version() << " (peer protocol " << info.peer_protocol_version()
      << ")\n"
      << "features:   " << absl::StrJoin(info.features(), ", ") << "\n"
      << "transports: " << absl::StrJoin(info.transports(), ", ") << "\n"
      << "io engine:  " << info.io_engine() << "\n"
      << "peers:      " << info.peer_address() << ", " << info.peer_security() << "\n"
      << "metrics:    "
      << (info.metrics_address().empty() ? "off" : "http://" + info.metrics_address() + "/metrics")
      << "\n"
      << "limits:     " << l.max_sessions() << " sessions, memory "
      << HumanBytes(l.memory_in_use_bytes()) << " of "
      << (l.max_memory_bytes() ? HumanBytes(l.max_memory_bytes()) : std::string("unlimited"))
      << " in use, host bandwidth "
      << (l.max_bandwidth_bytes_per_second()
              ? HumanBytes(l.max_bandwidth_bytes_per_second()) + "/s"
              : std::string("uncapped"))
      << ", ended sessions kept " << l.session_retention_seconds() << " s\n";
  return 0;
}

}  // namespace

int RunDaemonCommand(const std::string& command, const std::vector<std::string>& args,
                     const CtlOptions& o, std::ostream& out, std::ostream& err) {
  if (command != "health" && command != "info") return -1;
  if (!args.empty()) {
    err << command << ": takes no arguments\n";
    return 2;
  }
  return command == "health" ? Health(o, out, err) : Info(o, out, err);
}

}  // namespace migmover::ctl
