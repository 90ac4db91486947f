#include "daemon/testing/daemon_process.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "transport/net/socket.h"
#include "transport/peer/peer_connect.h"
#include "transport/tls/testing/test_pki.h"

namespace migmover::testing {

absl::StatusOr<tls::TlsConfig> DefaultTlsConfig(const std::string& name) {
  static absl::Mutex mu;
  static tls::testing::TestPki* pki ABSL_GUARDED_BY(mu) = nullptr;  // Never freed: the files
  static int issued ABSL_GUARDED_BY(mu) = 0;  // must outlive every daemon.
  absl::MutexLock l(&mu);
  if (pki == nullptr) {
    std::string dir;
    if (const char* tmp = std::getenv("TEST_TMPDIR"); tmp != nullptr) {
      dir = tmp;
    } else {
      char tmpl[] = "/tmp/mmpki.XXXXXX";
      if (::mkdtemp(tmpl) == nullptr) return absl::InternalError("mkdtemp(/tmp/mmpki) failed");
      dir = tmpl;
      // Outside a test's own temporary directory (migmover-bench, the kernel VM's agent), the
      // throw-away CA's key goes with the process.
      static std::string created;
      created = dir;
      std::atexit([] {
        std::error_code ignored;
        std::filesystem::remove_all(created, ignored);
      });
    }
    auto created = tls::testing::TestPki::Create(dir, "migmover test CA",
                                                 absl::StrCat("daemons-", getpid(), "-"));
    if (!created.ok()) return created.status();
    pki = created->release();
  }
  // Its own files per daemon: a daemon restarted under the same name gets a fresh pair.
  return pki->Issue(absl::StrCat(name, ".", ++issued));
}

absl::StatusOr<std::vector<std::string>> DefaultTlsFlags(const std::string& name) {
  auto config = DefaultTlsConfig(name);
  if (!config.ok()) return config.status();
  return std::vector<std::string>{"--tls_ca=" + config->ca_file, "--tls_cert=" + config->cert_file,
                                  "--tls_key=" + config->key_file};
}

absl::StatusOr<peer::PeerConnection> DaemonProcess::ConnectAsPeer(const std::string& as) const {
  auto addr = net::ParseHostPort(peer_address());
  if (!addr.ok()) return addr.status();
  std::shared_ptr<const tls::TlsContext> context;
  if (default_tls_) {
    auto config = DefaultTlsConfig(as);
    if (!config.ok()) return config.status();
    auto created = tls::TlsContext::Create(*config);
    if (!created.ok()) return created.status();
    context = std::move(*created);
  }
  return peer::ConnectPeer(*addr, absl::Seconds(5), context.get(),
                           {.peer_timeout = absl::Seconds(10)});
}

std::string MigmoverdPath() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  if (srcdir) return std::string(srcdir) + "/migmover/daemon/server/migmoverd";
  char self[4096];
  ssize_t n = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
  std::string exe = n > 0 ? std::string(self, n) : "";
  const std::string runfiles = exe + ".runfiles/migmover/daemon/server/migmoverd";
  if (::access(runfiles.c_str(), X_OK) == 0) return runfiles;
  // bazel-bin/<pkg>/<binary> -> bazel-bin/daemon/server/migmoverd
  size_t bin = exe.rfind("/bin/");
  if (bin != std::string::npos) return exe.substr(0, bin) + "/bin/daemon/server/migmoverd";
  return "migmoverd";
}

absl::StatusOr<std::unique_ptr<DaemonProcess>> DaemonProcess::Start(
    const std::string& binary, const std::string& name, const std::vector<std::string>& extra,
    LaunchOptions launch) {
  std::unique_ptr<DaemonProcess> d(new DaemonProcess());
  d->listen_host_ = launch.listen_host;
  // Socket paths must stay under 108 bytes: a short private directory in /tmp.
  char tmpl[] = "/tmp/mmd.XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) return absl::InternalError("mkdtemp failed");
  d->dir_ = tmpl;
  d->grpc_socket_ = d->dir_ + "/grpc.sock";
  d->fd_socket_ = d->dir_ + "/fd.sock";
  const std::string port_file = d->dir_ + "/port";
  const char* outdir = std::getenv("TEST_UNDECLARED_OUTPUTS_DIR");
  d->log_path_ = absl::StrCat(outdir ? outdir : d->dir_.c_str(), "/", name, ".", getpid(), ".",
                              absl::ToUnixMicros(absl::Now()), ".log");
  std::vector<std::string> args = {binary,
                                   "--name=" + name,
                                   "--grpc_socket=" + d->grpc_socket_,
                                   "--fd_socket=" + d->fd_socket_,
                                   "--peer_listen=" + launch.listen_host + ":0",
                                   "--port_file=" + port_file};
  args.insert(args.end(), extra.begin(), extra.end());
  const bool chosen = std::any_of(extra.begin(), extra.end(), [](const std::string& f) {
    return absl::StartsWith(f, "--tls_") || absl::StartsWith(f, "--plaintext_peers");
  });
  if (launch.default_tls && !chosen) {
    auto tls_flags = DefaultTlsFlags(name);
    if (!tls_flags.ok()) return tls_flags.status();
    args.insert(args.end(), tls_flags->begin(), tls_flags->end());
    d->default_tls_ = true;
  }
  pid_t pid = ::fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    FILE* log = std::fopen(d->log_path_.c_str(), "w");
    if (log) {
      ::dup2(fileno(log), STDERR_FILENO);
      ::dup2(fileno(log), STDOUT_FILENO);
    }
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (!launch.netns.empty()) {
      const std::string path = "/var/run/netns/" + launch.netns;
      const int ns = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (ns < 0 || ::setns(ns, CLONE_NEWNET) != 0) {
        std::fprintf(stderr, "test launcher: setns(%s): %s\n", path.c_str(), std::strerror(errno));
        std::_Exit(126);
      }
    }
    if (launch.forbid_io_uring) {
      if (absl::Status s = ForbidIoUring(); !s.ok()) {
        std::fprintf(stderr, "test launcher: %s\n", std::string(s.message()).c_str());
        std::_Exit(126);
      }
    }
    ::execv(binary.c_str(), argv.data());
    std::_Exit(127);
  }
  d->pid_ = pid;
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (absl::Now() < deadline) {
    std::ifstream pf(port_file);
    if (pf >> d->port_ && d->port_ > 0) break;
    int status;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      d->pid_ = -1;
      return absl::InternalError(absl::StrCat("migmoverd ", name, " exited at start: ", d->Log()));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  if (d->port_ <= 0) return absl::DeadlineExceededError("migmoverd did not become ready");
  auto channel = grpc::CreateChannel("unix:" + d->grpc_socket_, grpc::InsecureChannelCredentials());
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
    return absl::DeadlineExceededError("migmoverd gRPC socket did not answer");
  }
  d->stub_ = v1::Migmover::NewStub(channel);
  d->channel_ = channel;
  return d;
}

DaemonProcess::~DaemonProcess() {
  if (pid_ > 0) {
    ::kill(pid_, SIGTERM);
    int status;
    for (int i = 0; i < 100; ++i) {
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        break;
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
    }
  }
  ::unlink(grpc_socket_.c_str());
  ::unlink(fd_socket_.c_str());
  ::unlink((dir_ + "/port").c_str());
  ::rmdir(dir_.c_str());
}

std::string DaemonProcess::Log() const {
  std::ifstream in(log_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace migmover::testing
