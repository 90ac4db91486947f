// The gRPC API over TCP for agents on other hosts (migmoverd --grpc_listen): always mutual TLS.
// An agent with a certificate the agents' CA signed (and, with an allow-list, a listed name)
// calls the API; a client without a certificate, with one from another CA, with a name outside
// the list, or without TLS at all gets no answer from the service.
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "daemon/api/grpc_tls.h"
#include "daemon/testing/daemon_process.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "transport/base/unique_fd.h"
#include "transport/tls/testing/test_pki.h"

namespace migmover {
namespace {

// A port nothing listens on now (the daemon takes it a moment later).
int FreePort() {
  UniqueFd s(::socket(AF_INET, SOCK_STREAM, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) return 0;
  socklen_t len = sizeof(a);
  ::getsockname(s.get(), reinterpret_cast<sockaddr*>(&a), &len);
  return ntohs(a.sin_port);
}

std::string MigmoverctlPath() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  return srcdir != nullptr ? std::string(srcdir) + "/migmover/daemon/cli/migmoverctl"
                           : "bazel-bin/daemon/cli/migmoverctl";
}

class GrpcTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* tmp = std::getenv("TEST_TMPDIR");
    const std::string dir = tmp != nullptr ? tmp : "/tmp";
    auto pki = tls::testing::TestPki::Create(dir, "agents CA", "agents-");
    auto other = tls::testing::TestPki::Create(dir, "other CA", "other-");
    ASSERT_TRUE(pki.ok() && other.ok());
    pki_ = std::move(*pki);
    other_ = std::move(*other);
    auto server = pki_->Issue("localhost");
    ASSERT_TRUE(server.ok()) << server.status();
    port_ = FreePort();
    ASSERT_NE(port_, 0);
    auto d = testing::DaemonProcess::Start(
        testing::MigmoverdPath(), "api",
        {absl::StrCat("--grpc_listen=127.0.0.1:", port_), "--grpc_tls_ca=" + pki_->ca_file(),
         "--grpc_tls_cert=" + server->cert_file, "--grpc_tls_key=" + server->key_file,
         "--grpc_tls_client_names=agent.example"});
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = std::move(*d);
    ASSERT_NE(daemon_->Log().find(absl::StrCat("tcp:127.0.0.1:", port_)), std::string::npos)
        << daemon_->Log();
  }

  // ListDevices over TCP with `creds`. By address (no DNS: gRPC's resolver library keeps
  // allocations LeakSanitizer reports), checking the name on the daemon's certificate.
  grpc::Status Call(std::shared_ptr<grpc::ChannelCredentials> creds) {
    grpc::ChannelArguments args;
    args.SetSslTargetNameOverride("localhost");
    auto stub = v1::Migmover::NewStub(grpc::CreateCustomChannel(
        absl::StrCat("ipv4:127.0.0.1:", port_), std::move(creds), args));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::ListDevicesRequest req;
    v1::ListDevicesResponse resp;
    return stub->ListDevices(&ctx, req, &resp);
  }

  std::shared_ptr<grpc::ChannelCredentials> Client(tls::testing::TestPki& pki,
                                                   const std::string& name) {
    auto c = pki.Issue(name);
    EXPECT_TRUE(c.ok()) << c.status();
    // The daemon's certificate is checked against the agents' CA whoever signed the client's.
    auto creds = GrpcClientTls({pki_->ca_file(), c->cert_file, c->key_file, {}});
    EXPECT_TRUE(creds.ok()) << creds.status();
    return creds.ok() ? *creds : nullptr;
  }

  std::unique_ptr<tls::testing::TestPki> pki_, other_;
  std::unique_ptr<testing::DaemonProcess> daemon_;
  int port_ = 0;
};

TEST_F(GrpcTlsTest, AnAgentWithACertificateTheCaSignedIsServed) {
  const grpc::Status st = Call(Client(*pki_, "agent.example"));
  EXPECT_TRUE(st.ok()) << st.error_code() << ": " << st.error_message();
}

TEST_F(GrpcTlsTest, ANameOutsideTheAllowListIsRefused) {
  const grpc::Status st = Call(Client(*pki_, "intruder.example"));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();
  EXPECT_NE(st.error_message().find("intruder.example"), std::string::npos) << st.error_message();
  EXPECT_NE(daemon_->Log().find("refused a call from a client whose certificate names"),
            std::string::npos)
      << daemon_->Log();
}

TEST_F(GrpcTlsTest, ACertificateFromAnotherCaIsRefused) {
  const grpc::Status st = Call(Client(*other_, "agent.example"));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << st.error_message();
}

TEST_F(GrpcTlsTest, AClientWithoutACertificateIsRefused) {
  grpc::SslCredentialsOptions o;
  auto c = pki_->Issue("unused");
  ASSERT_TRUE(c.ok());
  std::FILE* f = std::fopen(pki_->ca_file().c_str(), "r");
  ASSERT_NE(f, nullptr);
  char buf[8192];
  o.pem_root_certs.assign(buf, std::fread(buf, 1, sizeof(buf), f));
  std::fclose(f);
  const grpc::Status st = Call(grpc::SslCredentials(o));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << st.error_message();
}

TEST_F(GrpcTlsTest, APlaintextClientIsRefused) {
  const grpc::Status st = Call(grpc::InsecureChannelCredentials());
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << st.error_message();
}

TEST_F(GrpcTlsTest, MigmoverctlSpeaksTls) {
  auto c = pki_->Issue("agent.example");
  ASSERT_TRUE(c.ok());
  const std::string cmd =
      absl::StrCat(MigmoverctlPath(), " devices --socket=tls:ipv4:127.0.0.1:", port_,
                   " --tls_server_name=localhost --tls_ca=", pki_->ca_file(),
                   " --tls_cert=", c->cert_file, " --tls_key=", c->key_file, " 2>&1");
  std::FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof(buf), p)) > 0;) out.append(buf, n);
  const int status = ::pclose(p);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
  // Without credentials it refuses to try rather than speak plaintext to a TLS port.
  p = ::popen(absl::StrCat(MigmoverctlPath(), " devices --socket=tls:ipv4:127.0.0.1:", port_,
                           " 2>&1")
                  .c_str(),
              "r");
  ASSERT_NE(p, nullptr);
  out.clear();
  for (size_t n; (n = std::fread(buf, 1, sizeof(buf), p)) > 0;) out.append(buf, n);
  const int refused = ::pclose(p);
  EXPECT_TRUE(WIFEXITED(refused) && WEXITSTATUS(refused) == 2) << out;
  EXPECT_NE(out.find("--tls_ca"), std::string::npos) << out;
}

TEST(GrpcTlsFlags, ListenWithoutCredentialsIsRefusedAtStart) {
  auto d = testing::DaemonProcess::Start(testing::MigmoverdPath(), "nocreds",
                                         {"--grpc_listen=127.0.0.1:0"});
  EXPECT_FALSE(d.ok());
}

}  // namespace
}  // namespace migmover
