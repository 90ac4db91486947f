#include "daemon/cli/session_commands.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "daemon/cli/ctl_client.h"
#include "daemon/cli/ctl_output.h"
#include "daemon/cli/progress_bar.h"
#include "daemon/device/sim/sim_device_spec.h"
#include "grpcpp/grpcpp.h"

namespace migmover::ctl {
namespace {

using v1::SessionStatus;

int PrintStatus(const SessionStatus& s, const CtlOptions& o, std::ostream& out) {
  if (o.json) {
    PrintJson(s, out);
  } else {
    PrintSession(s, out);
  }
  return 0;
}

v1::TransferOptions TransferOptionsFrom(const CtlOptions& o) {
  v1::TransferOptions t;
  t.set_data_path(o.data_path);
  t.set_transport(o.transport);
  t.set_streams(o.streams);
  t.set_chunk_size(o.chunk_size);
  return t;
}

int Prepare(const std::vector<std::string>& args, const CtlOptions& o, std::ostream& out,
            std::ostream& err) {
  if (args.size() < 2) {
    err << "prepare: expected SESSION DEVICE...\n";
    return 2;
  }
  v1::PrepareDestinationRequest req;
  req.set_session_id(args[0]);
  for (size_t i = 1; i < args.size(); ++i) req.add_devices(args[i]);
  if (!o.token.empty()) {
    auto token = ParseToken(o.token);
    if (!token.ok()) {
      err << "prepare: " << token.status().message() << "\n";
      return 2;
    }
    req.set_token(*token);
  }
  req.set_final_state(o.final_state);
  *req.mutable_options() = TransferOptionsFrom(o);
  grpc::ClientContext ctx;
  SessionStatus s;
  grpc::Status st = Connect(o.socket)->PrepareDestination(&ctx, req, &s);
  if (!st.ok()) return Refused(st, "PrepareDestination", o.socket, err);
  if (o.json) return PrintStatus(s, o, out);
  PrintSession(s, out);
  if (!s.token().empty()) {
    out << "token: " << Hex(s.token()) << "\n"
        << "  (the session's secret: give it to the source, `migmoverctl start --token`; keep it "
           "as you would a password)\n";
  }
  return 0;
}

int Start(const std::vector<std::string>& args, const CtlOptions& o, std::ostream& out,
          std::ostream& err) {
  if (args.size() < 2 || o.peer.empty() || o.token.empty()) {
    err << "start: expected --peer HOST:PORT --token SECRET SESSION DEVICE...\n";
    return 2;
  }
  auto token = ParseToken(o.token);
  if (!token.ok()) {
    err << "start: " << token.status().message() << "\n";
    return 2;
  }
  v1::StartSourceRequest req;
  req.set_session_id(args[0]);
  for (size_t i = 1; i < args.size(); ++i) req.add_devices(args[i]);
  req.set_peer(o.peer);
  req.set_token(*token);
  req.set_precopy(o.precopy);
  req.set_bandwidth_bytes_per_second(o.bandwidth);
  if (o.downtime_limit_ms) req.set_downtime_limit_ms(*o.downtime_limit_ms);
  if (o.progress_timeout_s) req.set_progress_timeout_seconds(*o.progress_timeout_s);
  if (o.completion_timeout_s) req.set_completion_timeout_seconds(*o.completion_timeout_s);
  if (o.completion_timeout_per_gib_s) {
    req.set_completion_timeout_per_gib_seconds(*o.completion_timeout_per_gib_s);
  }
  *req.mutable_options() = TransferOptionsFrom(o);
  grpc::ClientContext ctx;
  SessionStatus s;
  grpc::Status st = Connect(o.socket)->StartSource(&ctx, req, &s);
  if (!st.ok()) return Refused(st, "StartSource", o.socket, err);
  return PrintStatus(s, o, out);
}

// The commands that name one session and get its status back.
int OneSession(const std::string& command, const std::vector<std::string>& args,
               const CtlOptions& o, std::ostream& out, std::ostream& err) {
  if (args.size() != 1) {
    err << command << ": expected one SESSION argument\n";
    return 2;
  }
  auto stub = Connect(o.socket);
  grpc::ClientContext ctx;
  SessionStatus s;
  grpc::Status st;
  std::string rpc;
  if (command == "get" || command == "status") {
    v1::GetSessionRequest req;
    req.set_session_id(args[0]);
    rpc = "GetSession";
    st = stub->GetSession(&ctx, req, &s);
  } else if (command == "cancel") {
    v1::CancelSessionRequest req;
    req.set_session_id(args[0]);
    rpc = "CancelSession";
    st = stub->CancelSession(&ctx, req, &s);
  } else if (command == "switchover") {
    v1::SwitchoverRequest req;
    req.set_session_id(args[0]);
    rpc = "Switchover";
    st = stub->Switchover(&ctx, req, &s);
  } else {
    v1::ForgetSessionRequest req;
    req.set_session_id(args[0]);
    rpc = "ForgetSession";
    st = stub->ForgetSession(&ctx, req, &s);
  }
  if (!st.ok()) return Refused(st, rpc, o.socket, err);
  return PrintStatus(s, o, out);
}

int List(const std::vector<std::string>& args, const CtlOptions& o, std::ostream& out,
         std::ostream& err) {
  if (!args.empty()) {
    err << "list: takes no arguments\n";
    return 2;
  }
  grpc::ClientContext ctx;
  v1::ListSessionsResponse resp;
  grpc::Status st = Connect(o.socket)->ListSessions(&ctx, v1::ListSessionsRequest(), &resp);
  if (!st.ok()) return Refused(st, "ListSessions", o.socket, err);
  if (o.json) {
    PrintJson(resp, out);
    return 0;
  }
  if (resp.sessions().empty()) out << "no sessions\n";
  for (const auto& s : resp.sessions()) out << StatusLine(s) << "\n";
  return 0;
}

int Bandwidth(const std::vector<std::string>& args, const CtlOptions& o, std::ostream& out,
              std::ostream& err) {
  if (args.size() != 2) {
    err << "bandwidth: expected SESSION RATE\n";
    return 2;
  }
  auto rate = sim::ParseByteSize(args[1]);
  if (!rate.ok()) {
    err << "bandwidth: " << rate.status().message() << "\n";
    return 2;
  }
  grpc::ClientContext ctx;
  v1::SetBandwidthRequest req;
  req.set_session_id(args[0]);
  req.set_bytes_per_second(*rate);
  SessionStatus s;
  grpc::Status st = Connect(o.socket)->SetBandwidth(&ctx, req, &s);
  if (!st.ok()) return Refused(st, "SetBandwidth", o.socket, err);
  if (o.json) return PrintStatus(s, o, out);
  out << StatusLine(s) << ", cap "
      << (s.bandwidth_bytes_per_second() ? HumanBytes(s.bandwidth_bytes_per_second()) + "/s"
                                         : std::string("off"))
      << "\n";
  return 0;
}

int Resolve(const std::vector<std::string>& args, const CtlOptions& o, std::ostream& out,
            std::ostream& err) {
  if (args.size() != 2 || (args[1] != "run" && args[1] != "abandon")) {
    err << "resolve: expected SESSION run|abandon\n";
    return 2;
  }
  grpc::ClientContext ctx;
  v1::ResolveSessionRequest req;
  req.set_session_id(args[0]);
  req.set_outcome(args[1] == "run" ? v1::ResolveSessionRequest::RUN
                                   : v1::ResolveSessionRequest::ABANDON);
  SessionStatus s;
  grpc::Status st = Connect(o.socket)->ResolveSession(&ctx, req, &s);
  if (!st.ok()) return Refused(st, "ResolveSession", o.socket, err);
  PrintStatus(s, o, out);
  // 0 when the outcome asked for took effect (abandoning ends the session FAILED).
  const bool ran = s.phase() == SessionStatus::SUCCEEDED;
  return ran == (args[1] == "run") ? 0 : 1;
}

}  // namespace

int TerminalWidth(int fd) {
  if (!::isatty(fd)) return 0;
  const char* term = std::getenv("TERM");
  if (term != nullptr && std::string(term) == "dumb") return 0;
  winsize ws{};
  if (::ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 80;
}

int Watch(const std::string& session, const CtlOptions& o, bool terminal, int width,
          std::ostream& out, std::ostream& err) {
  grpc::ClientContext ctx;
  v1::WatchSessionRequest req;
  req.set_session_id(session);
  auto reader = Connect(o.socket)->WatchSession(&ctx, req);
  SessionStatus s;
  bool drew = false;
  while (reader->Read(&s)) {
    if (o.json) {
      PrintJson(s, out);
    } else if (terminal) {
      // Back to the line's start and clear it: one line, redrawn in place.
      out << "\r\033[K" << ProgressLine(s, width) << std::flush;
      drew = true;
    } else {
      out << StatusLine(s) << std::endl;
    }
  }
  grpc::Status st = reader->Finish();
  if (drew) out << "\n";
  if (!st.ok()) return Refused(st, "WatchSession", o.socket, err);
  if (terminal && !o.json) PrintSession(s, out);
  return s.phase() == SessionStatus::SUCCEEDED ? 0 : 1;
}

int RunSessionCommand(const std::string& command, const std::vector<std::string>& args,
                      const CtlOptions& o, std::ostream& out, std::ostream& err) {
  if (command == "prepare") return Prepare(args, o, out, err);
  if (command == "start") return Start(args, o, out, err);
  if (command == "get" || command == "status" || command == "cancel" ||
      command == "switchover" || command == "forget") {
    return OneSession(command, args, o, out, err);
  }
  if (command == "list") return List(args, o, out, err);
  if (command == "bandwidth") return Bandwidth(args, o, out, err);
  if (command == "resolve") return Resolve(args, o, out, err);
  if (command == "watch") {
    if (args.size() != 1) {
      err << "watch: expected one SESSION argument\n";
      return 2;
    }
    const int width = o.force_bar ? 100 : TerminalWidth(STDOUT_FILENO);
    return Watch(args[0], o, width > 0, width, out, err);
  }
  return -1;
}

}  // namespace migmover::ctl
