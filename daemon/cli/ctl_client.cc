#include "daemon/cli/ctl_client.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "daemon/cli/ctl_output.h"
#include "grpcpp/grpcpp.h"

namespace migmover::ctl {

namespace {
struct Tls {
  std::shared_ptr<grpc::ChannelCredentials> creds;
  std::string server_name;
};
Tls& TlsSettings() {
  static auto* tls = new Tls();
  return *tls;
}
}  // namespace

absl::Status UseTls(const GrpcTlsFiles& files, const std::string& server_name) {
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> creds = GrpcClientTls(files);
  if (!creds.ok()) return creds.status();
  TlsSettings() = {*std::move(creds), server_name};
  return absl::OkStatus();
}

std::shared_ptr<grpc::Channel> ConnectChannel(const std::string& address) {
  if (absl::StartsWith(address, "tls:")) {
    const Tls& tls = TlsSettings();
    if (tls.creds == nullptr) {
      // Never plaintext to a TLS listener: a channel that cannot connect, and says why.
      return grpc::CreateChannel("unix:/nonexistent/--tls_ca-not-given",
                                 grpc::InsecureChannelCredentials());
    }
    grpc::ChannelArguments args;
    if (!tls.server_name.empty()) args.SetSslTargetNameOverride(tls.server_name);
    return grpc::CreateCustomChannel(address.substr(4), tls.creds, args);
  }
  return grpc::CreateChannel("unix:" + address, grpc::InsecureChannelCredentials());
}

std::unique_ptr<v1::Migmover::Stub> Connect(const std::string& address) {
  return v1::Migmover::NewStub(ConnectChannel(address));
}

absl::Status FromGrpc(const grpc::Status& s, const std::string& rpc, const std::string& daemon) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      absl::StrCat(rpc, " on ", daemon, ": ", Printable(s.error_message())));
}

std::string HumanBytes(double bytes) {
  const char* units[] = {"B", "kB", "MB", "GB", "TB"};
  int u = 0;
  while (bytes >= 1000 && u < 4) {
    bytes /= 1000;
    ++u;
  }
  return u == 0 ? absl::StrFormat("%.0f %s", bytes, units[u])
                : absl::StrFormat("%.2f %s", bytes, units[u]);
}

std::string StatusLine(const v1::SessionStatus& s) {
  std::string line = absl::StrFormat(
      "%s %s: %s, %s moved (precopy %s, stop-copy %s), pending %s, %s/s, rounds %d",
      s.role() == v1::SessionStatus::SOURCE ? "source" : "destination", s.session_id(),
      v1::SessionStatus::Phase_Name(s.phase()), HumanBytes(s.bytes_moved()),
      HumanBytes(s.precopy_bytes()), HumanBytes(s.stop_copy_bytes()), HumanBytes(s.pending_bytes()),
      HumanBytes(s.rate_bytes_per_second()), s.precopy_rounds());
  if (s.reconnections() > 0 || s.time_lost_seconds() > 0) {
    absl::StrAppend(&line, absl::StrFormat(", %d reconnection(s), %.2f s lost to them",
                                           s.reconnections(), s.time_lost_seconds()));
    if (s.replayed_bytes() > 0) {
      absl::StrAppend(&line, ", ", HumanBytes(s.replayed_bytes()), " sent again");
    }
  }
  if (!s.error().empty()) absl::StrAppend(&line, ", error: ", s.error());
  return Printable(line);
}

}  // namespace migmover::ctl
