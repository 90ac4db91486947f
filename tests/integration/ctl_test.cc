// migmoverctl against real daemons: a migration driven step by step from the command line,
// `watch`'s live progress line under a pseudo-terminal (and plain lines without one), --json
// everywhere as protobuf's JSON mapping, attach by fd and by path, and the exit codes.
#include <fcntl.h>
#include <pty.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "google/protobuf/util/json_util.h"
#include "tests/integration/two_daemons.h"
#include "transport/base/unique_fd.h"

namespace migmover::testing {
namespace {

std::string CtlPath() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  return srcdir != nullptr ? std::string(srcdir) + "/migmover/daemon/cli/migmoverctl"
                           : "bazel-bin/daemon/cli/migmoverctl";
}

// A running migmoverctl. Its stdout is a pipe, or a pseudo-terminal of 100 columns; stderr a
// pipe. `keep_fd` (if not -1) stays open in it under the same number.
class Ctl {
 public:
  Ctl(const std::vector<std::string>& args, bool terminal, int keep_fd = -1) {
    std::vector<std::string> argv = {CtlPath()};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    int out[2], err[2];
    if (terminal) {
      winsize ws{};
      ws.ws_row = 24;
      ws.ws_col = 100;
      EXPECT_EQ(::openpty(&out[0], &out[1], nullptr, nullptr, &ws), 0) << errno;
    } else {
      EXPECT_EQ(::pipe2(out, O_CLOEXEC), 0);
    }
    EXPECT_EQ(::pipe2(err, O_CLOEXEC), 0);
    pid_ = ::fork();
    if (pid_ == 0) {
      // Only async-signal-safe calls until exec.
      ::dup2(out[1], STDOUT_FILENO);
      ::dup2(err[1], STDERR_FILENO);
      if (keep_fd >= 0) ::fcntl(keep_fd, F_SETFD, 0);
      ::execv(cargv[0], cargv.data());
      ::_exit(127);
    }
    ::close(out[1]);  // NOLINT: the child's ends, before they are owned.
    ::close(err[1]);
    out_ = UniqueFd(out[0]);
    err_ = UniqueFd(err[0]);
    readers_.emplace_back([this] { Drain(out_.get(), &stdout_); });
    readers_.emplace_back([this] { Drain(err_.get(), &stderr_); });
  }
  ~Ctl() { Wait(); }

  // Waits until stdout holds `text` (true) or the program ended without it, or 60 s passed
  // (false).
  bool WaitForOutput(const std::string& text) {
    absl::MutexLock l(&mu_);
    auto seen = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return absl::StrContains(stdout_, text) || closed_ == 2;
    };
    mu_.AwaitWithTimeout(absl::Condition(&seen), absl::Seconds(60));
    return absl::StrContains(stdout_, text);
  }

  // Waits for the exit; returns the exit code.
  int Wait() {
    for (auto& t : readers_) t.join();
    readers_.clear();
    if (pid_ > 0) {
      int status = 0;
      ::waitpid(pid_, &status, 0);
      code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      pid_ = -1;
    }
    return code_;
  }
  std::string out() {
    absl::MutexLock l(&mu_);
    return stdout_;
  }
  std::string err() {
    absl::MutexLock l(&mu_);
    return stderr_;
  }

 private:
  void Drain(int fd, std::string* into) {
    char buf[4096];
    for (;;) {
      const ssize_t n = ::read(fd, buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;  // EOF, or EIO once a pty's last writer closed it.
      absl::MutexLock l(&mu_);
      into->append(buf, static_cast<size_t>(n));
    }
    absl::MutexLock l(&mu_);
    ++closed_;
  }

  pid_t pid_ = -1;
  int code_ = -1;
  UniqueFd out_, err_;
  absl::Mutex mu_;
  std::string stdout_ ABSL_GUARDED_BY(mu_), stderr_ ABSL_GUARDED_BY(mu_);
  int closed_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::thread> readers_;
};

struct Ran {
  int code;
  std::string out, err;
};

class CtlTest : public TwoDaemons {
 protected:
  std::vector<std::string> On(DaemonProcess& d, std::vector<std::string> args) {
    args.insert(args.begin() + 1, "--socket=" + d.grpc_socket());
    return args;
  }
  Ran Run(DaemonProcess& d, std::vector<std::string> args, int keep_fd = -1) {
    Ctl c(On(d, std::move(args)), /*terminal=*/false, keep_fd);
    const int code = c.Wait();
    return {code, c.out(), c.err()};
  }
  template <typename M>
  M ParseJson(const std::string& line) {
    M m;
    auto st = google::protobuf::util::JsonStringToMessage(line, &m);
    EXPECT_TRUE(st.ok()) << st.ToString() << " in: " << line;
    return m;
  }
};

// An operator migrates a device with migmoverctl alone: attach on both hosts, prepare (which
// prints the secret), start with it, watch on a terminal until READY, switch over, and the
// watch ends SUCCEEDED with its bar full.
TEST_F(CtlTest, AMigrationStepByStepWithTheLiveBarOnATerminal) {
  ASSERT_EQ(Run(*src_, {"attach", "vm0", "--sim=size=32MiB,seed=7"}).code, 0);
  ASSERT_EQ(Run(*dst_, {"attach", "vm0", "--sim=size=32MiB"}).code, 0);
  const Ran prepared = Run(*dst_, {"prepare", "m1", "vm0"});
  ASSERT_EQ(prepared.code, 0) << prepared.err;
  std::string token;
  for (absl::string_view line : absl::StrSplit(prepared.out, '\n')) {
    if (absl::ConsumePrefix(&line, "token: ")) token = std::string(line);
  }
  ASSERT_EQ(token.size(), 64u) << prepared.out;
  const Ran started = Run(*src_, {"start", "m1", "vm0", "--peer=" + dst_->peer_address(),
                                  "--token=" + token, "--downtime_limit_ms=60000"});
  ASSERT_EQ(started.code, 0) << started.err;
  EXPECT_TRUE(absl::StrContains(started.out, "source m1:")) << started.out;

  Ctl watch(On(*src_, {"watch", "m1"}), /*terminal=*/true);
  ASSERT_TRUE(watch.WaitForOutput("READY")) << watch.out() << watch.err();
  const Ran switched = Run(*src_, {"switchover", "m1"});
  EXPECT_EQ(switched.code, 0) << switched.err;
  EXPECT_EQ(watch.Wait(), 0) << watch.out() << watch.err();
  const std::string shown = watch.out();
  // Redrawn in place: back to the line's start and cleared, then the bar.
  EXPECT_TRUE(absl::StrContains(shown, "\r\033[K[")) << shown;
  EXPECT_TRUE(absl::StrContains(shown, "PRE_COPY, READY")) << shown;
  EXPECT_TRUE(absl::StrContains(shown, "left")) << shown;
  EXPECT_TRUE(absl::StrContains(shown, "] 100% SUCCEEDED")) << shown;
  EXPECT_TRUE(absl::StrContains(shown, "source m1: SUCCEEDED")) << shown;
  // No drawn line is wider than the terminal.
  std::vector<std::string> drawn = absl::StrSplit(shown, "\r\033[K");
  drawn.erase(drawn.begin());  // What came before the first draw.
  for (const std::string& d : drawn) {
    const std::string line = d.substr(0, d.find_first_of("\r\n"));
    EXPECT_LE(line.size(), 100u) << line;
  }

  // Without a terminal: plain lines, no control characters.
  const Ran plain = Run(*src_, {"watch", "m1"});
  EXPECT_EQ(plain.code, 0) << plain.err;
  EXPECT_TRUE(absl::StartsWith(plain.out, "source m1: SUCCEEDED")) << plain.out;
  EXPECT_EQ(plain.out.find_first_of("\r\033"), std::string::npos) << plain.out;
  const Ran dst_watch = Run(*dst_, {"watch", "m1"});
  EXPECT_EQ(dst_watch.code, 0) << dst_watch.err;
  EXPECT_TRUE(absl::StartsWith(dst_watch.out, "destination m1: SUCCEEDED")) << dst_watch.out;
}

// --json prints protobuf's JSON mapping for every command: each line parses back into the
// reply's message, and a session id with quotes and backslashes survives the trip.
TEST_F(CtlTest, JsonEverywhereIsProtobufsMapping) {
  const std::string id = R"(q"x\y)";
  ASSERT_TRUE(Attach(*src_, "d", "size=4MiB").ok());
  ASSERT_TRUE(Attach(*dst_, "d", "size=4MiB").ok());
  const Ran prepared = Run(*dst_, {"prepare", "--json", id, "d"});
  ASSERT_EQ(prepared.code, 0) << prepared.err;
  const auto p = ParseJson<v1::SessionStatus>(prepared.out);
  EXPECT_EQ(p.session_id(), id);
  ASSERT_EQ(p.token().size(), 32u);
  // The base64 --json shows is accepted as the token too.
  const std::string token64 = absl::Base64Escape(p.token());
  EXPECT_TRUE(absl::StrContains(prepared.out, "\"token\":\"" + token64 + "\"")) << prepared.out;
  const Ran started = Run(*src_, {"start", "--json", "--precopy=false", id, "d",
                                  "--peer=" + dst_->peer_address(), "--token=" + token64});
  ASSERT_EQ(started.code, 0) << started.err;
  EXPECT_EQ(ParseJson<v1::SessionStatus>(started.out).role(), SessionStatus::SOURCE);
  const Ran switched = Run(*src_, {"switchover", "--json", id});
  ASSERT_EQ(switched.code, 0) << switched.err;
  const Ran watched = Run(*src_, {"watch", "--json", id});
  EXPECT_EQ(watched.code, 0) << watched.err;
  SessionStatus last;
  for (absl::string_view line : absl::StrSplit(watched.out, '\n', absl::SkipEmpty())) {
    last = ParseJson<v1::SessionStatus>(std::string(line));
  }
  EXPECT_EQ(last.phase(), SessionStatus::SUCCEEDED);
  EXPECT_EQ(last.session_id(), id);

  const Ran got = Run(*dst_, {"get", "--json", id});
  EXPECT_TRUE(ParseJson<v1::SessionStatus>(got.out).verified()) << got.out;
  const Ran listed = Run(*src_, {"list", "--json"});
  EXPECT_EQ(ParseJson<v1::ListSessionsResponse>(listed.out).sessions_size(), 1) << listed.out;
  const Ran devices = Run(*src_, {"devices", "--json"});
  EXPECT_EQ(ParseJson<v1::ListDevicesResponse>(devices.out).devices(0).name(), "d");
  const Ran info = Run(*src_, {"info", "--json"});
  EXPECT_FALSE(ParseJson<v1::DaemonInfo>(info.out).version().empty()) << info.out;
  // Defaults are printed too: a reader need not know them.
  EXPECT_TRUE(absl::StrContains(info.out, "\"max_bandwidth_bytes_per_second\":\"0\"")) << info.out;
  const Ran health = Run(*src_, {"health", "--json"});
  EXPECT_EQ(health.code, 0);
  EXPECT_TRUE(absl::StrContains(health.out, "\"status\":\"SERVING\"")) << health.out;
  const Ran forgot = Run(*src_, {"forget", "--json", id});
  EXPECT_EQ(forgot.code, 0) << forgot.err;
  const Ran fsm = Run(*src_, {"fsm-path", "--json", "RUNNING", "STOP_COPY"});
  EXPECT_EQ(fsm.code, 0);
  EXPECT_TRUE(absl::StrContains(
      fsm.out, R"("path":["RUNNING","RUNNING_P2P","STOP","STOP_COPY"],"error":"")"))
      << fsm.out;
  const Ran refused = Run(*src_, {"fsm-path", "--json", "STOP_COPY", "PRE_COPY"});
  EXPECT_EQ(refused.code, 1);
  EXPECT_TRUE(absl::StrContains(refused.out, R"("error":"EINVAL")")) << refused.out;
}

// attach hands over one of its own fds (--fd) or a file it opens (--path) through the fd
// intake; what the daemon refuses comes back with its code, and exit code 1.
TEST_F(CtlTest, AttachHandsOverItsOwnFdOrAPath) {
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd read_end(p[0]), write_end(p[1]);
  const std::string fd_socket = "--fd_socket=" + src_->fd_socket();
  const Ran by_fd = Run(*src_,
                        {"attach", "vmm0", fd_socket, absl::StrCat("--fd=", read_end.get()),
                         "--purpose=save-data"},
                        read_end.get());
  EXPECT_EQ(by_fd.code, 0) << by_fd.err;
  EXPECT_TRUE(absl::StartsWith(by_fd.out, "vmm0\tSAVE_DATA_FD")) << by_fd.out;

  const std::string file = absl::StrCat(::testing::TempDir(), "/state.bin");
  { UniqueFd f(::open(file.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600)); }
  const Ran by_path =
      Run(*src_, {"attach", "vmm1", fd_socket, "--path=" + file, "--purpose=save-data"});
  EXPECT_EQ(by_path.code, 0) << by_path.err;
  EXPECT_TRUE(absl::StartsWith(by_path.out, "vmm1\tSAVE_DATA_FD")) << by_path.out;

  const Ran not_vfio = Run(*src_, {"attach", "vmm2", fd_socket, "--path=/dev/null"});
  EXPECT_EQ(not_vfio.code, 1);
  EXPECT_TRUE(absl::StrContains(not_vfio.err, "INVALID_ARGUMENT")) << not_vfio.err;
  const Ran closed = Run(*src_, {"attach", "vmm3", fd_socket, "--fd=987"});
  EXPECT_EQ(closed.code, 2);
  EXPECT_TRUE(absl::StrContains(closed.err, "not an open fd")) << closed.err;
  const Ran two = Run(*src_, {"attach", "vmm4", "--sim=size=1MiB", "--fd=0"});
  EXPECT_EQ(two.code, 2) << two.err;

  const Ran listed = Run(*src_, {"devices"});
  EXPECT_TRUE(absl::StrContains(listed.out, "vmm0\t")) << listed.out;
  EXPECT_FALSE(absl::StrContains(listed.out, "vmm2")) << listed.out;
  EXPECT_EQ(Run(*src_, {"detach", "vmm0"}).code, 0);
  EXPECT_EQ(Run(*src_, {"detach", "vmm1"}).code, 0);
  EXPECT_EQ(Run(*src_, {"detach", "vmm1"}).code, 1);
}

// bandwidth, cancel, forget and get on a running source session, and their errors.
TEST_F(CtlTest, BandwidthCancelForgetAndTheirErrors) {
  ASSERT_TRUE(Attach(*src_, "d", "size=256MiB").ok());
  ASSERT_TRUE(Attach(*dst_, "d", "size=256MiB").ok());
  ASSERT_TRUE(Prepare("b", {"d"}).ok());
  bandwidth_ = 1'000'000;
  ASSERT_TRUE(Start("b", {"d"}, /*precopy=*/true).ok());
  const Ran capped = Run(*src_, {"bandwidth", "b", "2MB"});
  EXPECT_EQ(capped.code, 0) << capped.err;
  EXPECT_TRUE(absl::StrContains(capped.out, "cap 2.00 MB/s")) << capped.out;
  EXPECT_EQ(Run(*src_, {"bandwidth", "b", "fast"}).code, 2);
  EXPECT_EQ(Run(*src_, {"forget", "b"}).code, 1);  // Still running.
  const Ran cancelled = Run(*src_, {"cancel", "b"});
  EXPECT_EQ(cancelled.code, 0) << cancelled.err;
  WaitFinal(*src_, "b");
  const Ran watched = Run(*src_, {"watch", "b"});
  EXPECT_EQ(watched.code, 1) << "a session that did not succeed: " << watched.out;
  EXPECT_EQ(Run(*src_, {"forget", "b"}).code, 0);
  const Ran gone = Run(*src_, {"get", "b"});
  EXPECT_EQ(gone.code, 1);
  EXPECT_TRUE(absl::StrContains(gone.err, "NOT_FOUND")) << gone.err;
  EXPECT_TRUE(absl::StrContains(gone.err, "GetSession on " + src_->grpc_socket())) << gone.err;
  EXPECT_EQ(Run(*src_, {"frobnicate"}).code, 2);
  EXPECT_EQ(Run(*src_, {"start", "x", "d"}).code, 2);  // No --peer, no --token.
}

}  // namespace
}  // namespace migmover::testing
