#include "bench/e2e/raw_tcp_baseline.h"

#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <optional>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "daemon/device/sim/sim_driver.h"
#include "transport/base/unique_fd.h"
#include "transport/peer/stream_auth.h"
#include "transport/net/socket.h"

namespace migmover::bench {
namespace {

struct ChildReport {
  int ok = 0;
  uint16_t port = 0;
  uint64_t bytes = 0;
  int64_t start_ns = 0, end_ns = 0;
  double cpu_seconds = 0;       // The whole process.
  double loop_cpu_seconds = 0;  // The loop's own thread (the rest is the simulated device's).
  uint64_t peak_rss_bytes = 0;
  uint8_t tag[16] = {};  // With the digest: the Poly1305 tag of every byte moved.
  char error[200] = {};
};

// The bench's fixed digest key: the raw loop's MAC costs what migmover's does, whatever the key.
peer::StreamKey BenchKey() {
  peer::StreamKey k;
  for (size_t i = 0; i < k.bytes.size(); ++i) k.bytes[i] = static_cast<uint8_t>(i * 7 + 1);
  return k;
}

// With `digest`, a MAC for the loop; a child that cannot make one reports why.
std::unique_ptr<peer::StreamMac> MaybeMac(bool digest, int report_fd, ChildReport& r);

// The tag into the report.
void FinishMac(peer::StreamMac* mac, int report_fd, ChildReport& r);

int64_t MonoNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

double CpuSeconds(int who = RUSAGE_SELF) {
  rusage ru;
  getrusage(who, &ru);
  return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
         ru.ru_stime.tv_usec / 1e6;
}

uint64_t PeakRss() {
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<uint64_t>(ru.ru_maxrss) * 1024;
}

void Send(int fd, const ChildReport& r) { (void)!::write(fd, &r, sizeof(r)); }

[[noreturn]] void Die(int report_fd, ChildReport r, const std::string& why) {
  std::snprintf(r.error, sizeof(r.error), "%s", why.c_str());
  r.ok = 0;
  Send(report_fd, r);
  std::_Exit(1);
}

bool ReadAll(int fd, void* p, size_t n) {
  auto* b = static_cast<uint8_t*>(p);
  while (n > 0) {
    ssize_t r = ::read(fd, b, n);
    if (r <= 0) return false;
    b += r;
    n -= r;
  }
  return true;
}

std::unique_ptr<peer::StreamMac> MaybeMac(bool digest, int report_fd, ChildReport& r) {
  if (!digest) return nullptr;
  auto mac = peer::StreamMac::Create(BenchKey());
  if (!mac.ok()) Die(report_fd, r, std::string(mac.status().message()));
  return std::move(*mac);
}

void FinishMac(peer::StreamMac* mac, int report_fd, ChildReport& r) {
  if (mac == nullptr) return;
  std::optional<peer::StreamTag> tag = mac->Finish();
  if (!tag.has_value()) Die(report_fd, r, "Poly1305 failed");
  static_assert(sizeof(r.tag) == std::tuple_size<peer::StreamTag>::value);
  std::memcpy(r.tag, tag->data(), sizeof(r.tag));
}

[[noreturn]] void Receiver(const sim::SimDeviceSpec& spec, size_t buffer,
                           const std::string& congestion, bool digest, int report_fd) {
  ChildReport r;
  std::unique_ptr<peer::StreamMac> mac = MaybeMac(digest, report_fd, r);
  sim::SimDeviceSpec dst;
  dst.state_size = spec.state_size;
  dst.features = spec.features;
  auto dev = sim::OpenSimulatedDevice(dst);
  if (!dev.ok()) Die(report_fd, r, std::string(dev.status().message()));
  auto fd = (*dev)->SetState(MigState::kResuming);
  if (!fd.ok()) Die(report_fd, r, std::string(fd.status().message()));
  auto lfd = net::TcpListen({"127.0.0.1", 0}, &r.port);
  if (!lfd.ok()) Die(report_fd, r, std::string(lfd.status().message()));
  r.ok = 1;
  Send(report_fd, r);  // Ready: here is the port.
  auto conn = net::Accept(lfd->get(), absl::Seconds(60));
  if (!conn.ok()) Die(report_fd, r, std::string(conn.status().message()));
  // Only the congestion control: the raw loop keeps the kernel's defaults for everything else.
  if (!congestion.empty()) {
    if (auto s = net::SetCongestionControl(conn->get(), congestion); !s.ok()) {
      Die(report_fd, r, std::string(s.message()));
    }
  }
  std::vector<uint8_t> buf(buffer);
  const double cpu0 = CpuSeconds();
  const double loop0 = CpuSeconds(RUSAGE_THREAD);
  r.start_ns = MonoNs();
  while (true) {
    ssize_t n = ::recv(conn->get(), buf.data(), buf.size(), 0);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      Die(report_fd, r, absl::StrCat("recv: ", std::strerror(errno)));
    }
    size_t off = 0;
    while (off < static_cast<size_t>(n)) {
      ssize_t w = ::write(fd->get(), buf.data() + off, n - off);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) Die(report_fd, r, absl::StrCat("write: ", std::strerror(errno)));
      off += w;
    }
    if (mac != nullptr) mac->Update(buf.data(), n);
    r.bytes += n;
  }
  FinishMac(mac.get(), report_fd, r);
  r.loop_cpu_seconds = CpuSeconds(RUSAGE_THREAD) - loop0;
  fd->Reset();
  auto committed = (*dev)->SetState(MigState::kRunning);
  r.end_ns = MonoNs();
  r.cpu_seconds = CpuSeconds() - cpu0;
  r.peak_rss_bytes = PeakRss();
  if (!committed.ok()) Die(report_fd, r, std::string(committed.status().message()));
  Send(report_fd, r);
  std::_Exit(0);
}

[[noreturn]] void Sender(const sim::SimDeviceSpec& spec, size_t buffer, uint16_t port,
                         const std::string& congestion, bool digest, int go_fd, int report_fd) {
  ChildReport r;
  std::unique_ptr<peer::StreamMac> mac = MaybeMac(digest, report_fd, r);
  auto dev = sim::OpenSimulatedDevice(spec);
  if (!dev.ok()) Die(report_fd, r, std::string(dev.status().message()));
  if (auto s = (*dev)->SetState(MigState::kStop); !s.ok()) {
    Die(report_fd, r, std::string(s.status().message()));
  }
  auto conn = net::TcpConnect({"127.0.0.1", port}, absl::Seconds(10));
  if (!conn.ok()) Die(report_fd, r, std::string(conn.status().message()));
  if (!congestion.empty()) {
    if (auto s = net::SetCongestionControl(conn->get(), congestion); !s.ok()) {
      Die(report_fd, r, std::string(s.message()));
    }
  }
  r.ok = 1;
  Send(report_fd, r);  // Ready.
  char go;
  if (::read(go_fd, &go, 1) != 1) std::_Exit(1);
  const double cpu0 = CpuSeconds();
  const double loop0 = CpuSeconds(RUSAGE_THREAD);
  r.start_ns = MonoNs();
  // The switchover: STOP -> STOP_COPY, as our source does without precopy.
  auto fd = (*dev)->SetState(MigState::kStopCopy);
  if (!fd.ok()) Die(report_fd, r, std::string(fd.status().message()));
  std::vector<uint8_t> buf(buffer);
  while (true) {
    ssize_t n = ::read(fd->get(), buf.data(), buf.size());
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      Die(report_fd, r, absl::StrCat("read: ", std::strerror(errno)));
    }
    if (!net::SendAll(conn->get(), absl::string_view(reinterpret_cast<char*>(buf.data()), n),
                      absl::InfiniteFuture())
             .ok()) {
      Die(report_fd, r, "send failed");
    }
    if (mac != nullptr) mac->Update(buf.data(), n);
    r.bytes += n;
  }
  ::shutdown(conn->get(), SHUT_WR);
  FinishMac(mac.get(), report_fd, r);
  r.loop_cpu_seconds = CpuSeconds(RUSAGE_THREAD) - loop0;
  r.end_ns = MonoNs();
  r.cpu_seconds = CpuSeconds() - cpu0;
  r.peak_rss_bytes = PeakRss();
  Send(report_fd, r);
  std::_Exit(0);
}

}  // namespace

absl::StatusOr<BaselineResult> RunRawTcpBaseline(const std::vector<sim::SimDeviceSpec>& sources,
                                                 size_t buffer_bytes,
                                                 const std::string& tcp_congestion,
                                                 bool digest) {
  ::signal(SIGPIPE, SIG_IGN);
  struct Pair {
    pid_t sender = -1, receiver = -1;
    UniqueFd sender_report, receiver_report, go;
  };
  std::vector<Pair> pairs(sources.size());
  auto reap_all = [&] {
    for (auto& p : pairs) {
      for (pid_t pid : {p.sender, p.receiver}) {
        if (pid > 0) {
          ::kill(pid, SIGKILL);
          ::waitpid(pid, nullptr, 0);
        }
      }
    }
  };
  for (size_t i = 0; i < sources.size(); ++i) {
    auto rpipe = MakePipe();
    if (!rpipe.ok()) return rpipe.status();
    pid_t rpid = ::fork();
    if (rpid == 0) {
      rpipe->read.Reset();
      Receiver(sources[i], buffer_bytes, tcp_congestion, digest, rpipe->write.get());
    }
    pairs[i].receiver = rpid;
    pairs[i].receiver_report = std::move(rpipe->read);
    ChildReport ready;
    if (!ReadAll(pairs[i].receiver_report.get(), &ready, sizeof(ready)) || !ready.ok) {
      reap_all();
      return absl::InternalError(absl::StrCat("baseline receiver: ", ready.error));
    }
    auto spipe = MakePipe();
    auto gpipe = MakePipe();
    if (!spipe.ok() || !gpipe.ok()) return absl::InternalError("pipe");
    pid_t spid = ::fork();
    if (spid == 0) {
      spipe->read.Reset();
      gpipe->write.Reset();
      Sender(sources[i], buffer_bytes, ready.port, tcp_congestion, digest, gpipe->read.get(),
             spipe->write.get());
    }
    pairs[i].sender = spid;
    pairs[i].sender_report = std::move(spipe->read);
    pairs[i].go = std::move(gpipe->write);
    if (!ReadAll(pairs[i].sender_report.get(), &ready, sizeof(ready)) || !ready.ok) {
      reap_all();
      return absl::InternalError(absl::StrCat("baseline sender: ", ready.error));
    }
  }
  for (auto& p : pairs) (void)!::write(p.go.get(), "g", 1);
  BaselineResult out;
  out.verified = true;
  int64_t start = INT64_MAX, end = 0;
  for (auto& p : pairs) {
    ChildReport s, r;
    bool sok = ReadAll(p.sender_report.get(), &s, sizeof(s));
    bool rok = ReadAll(p.receiver_report.get(), &r, sizeof(r));
    ::waitpid(p.sender, nullptr, 0);
    ::waitpid(p.receiver, nullptr, 0);
    p.sender = p.receiver = -1;
    if (!sok || !rok || !s.ok || !r.ok) {
      reap_all();
      return absl::InternalError(absl::StrCat("baseline pair failed: ", s.error, " ", r.error));
    }
    out.bytes += r.bytes;
    out.verified = out.verified && std::memcmp(s.tag, r.tag, sizeof(s.tag)) == 0;
    start = std::min(start, s.start_ns);
    end = std::max(end, r.end_ns);
    out.source.cpu_seconds += s.cpu_seconds;
    out.destination.cpu_seconds += r.cpu_seconds;
    out.source.device_cpu_seconds += std::max(0.0, s.cpu_seconds - s.loop_cpu_seconds);
    out.destination.device_cpu_seconds += std::max(0.0, r.cpu_seconds - r.loop_cpu_seconds);
    out.source.peak_rss_bytes += s.peak_rss_bytes;
    out.destination.peak_rss_bytes += r.peak_rss_bytes;
  }
  out.seconds = (end - start) / 1e9;
  return out;
}

}  // namespace migmover::bench
