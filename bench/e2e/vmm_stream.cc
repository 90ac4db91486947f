#include "bench/e2e/vmm_stream.h"

#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <span>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench/e2e/child_process.h"
#include "daemon/device/sim/sim_stream.h"
#include "transport/base/errno_status.h"
#include "transport/base/stream_digest.h"

namespace migmover::bench {
namespace {

constexpr int kChildFd = 3;

int64_t MonoNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

double CpuSeconds() {
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
         ru.ru_stime.tv_usec / 1e6;
}

int Report(const VmmEndReport& r) {
  std::printf("ok %llu %llu %lld %lld %.6f\n", static_cast<unsigned long long>(r.bytes),
              static_cast<unsigned long long>(r.digest), static_cast<long long>(r.start_ns),
              static_cast<long long>(r.end_ns), r.cpu_seconds);
  std::fflush(stdout);
  return 0;
}

int Fail(const std::string& why) {
  std::printf("error %s\n", why.c_str());
  std::fflush(stdout);
  return 1;
}

}  // namespace

absl::StatusOr<VmmChannel> ParseVmmChannel(const std::string& text) {
  if (text == "socket") return VmmChannel::kSocket;
  if (text == "pipe") return VmmChannel::kPipe;
  return absl::InvalidArgumentError(absl::StrCat("'", text, "': expected socket or pipe"));
}

absl::StatusOr<VmmChannelFds> MakeVmmChannel(VmmChannel kind) {
  VmmChannelFds out;
  if (kind == VmmChannel::kPipe) {
    auto p = MakePipe();
    if (!p.ok()) return p.status();
    out.write_end = std::move(p->write);
    out.read_end = std::move(p->read);
    return out;
  }
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    return ErrnoStatus("socketpair(AF_UNIX, SOCK_STREAM)", errno);
  }
  out.write_end.Reset(sv[0]);
  out.read_end.Reset(sv[1]);
  return out;
}

absl::StatusOr<std::unique_ptr<VmmEnd>> VmmEnd::StartWriter(int fd, uint64_t bytes,
                                                           uint64_t write_size, uint64_t rate) {
  return Start("writer", fd, bytes, write_size, rate);
}

absl::StatusOr<std::unique_ptr<VmmEnd>> VmmEnd::StartReader(int fd, uint64_t read_size) {
  return Start("reader", fd, 0, read_size, 0);
}

absl::StatusOr<std::unique_ptr<VmmEnd>> VmmEnd::Start(const std::string& role, int fd,
                                                      uint64_t bytes, uint64_t io_size,
                                                      uint64_t rate) {
  auto go = MakePipe();
  if (!go.ok()) return go.status();
  std::unique_ptr<VmmEnd> end(new VmmEnd());
  auto child = ChildProcess::Spawn(
      "/proc/self/exe",
      {"migmover-bench", "--vmm_role=" + role, absl::StrCat("--vmm_child_bytes=", bytes),
       absl::StrCat("--vmm_child_io_size=", io_size), absl::StrCat("--vmm_child_rate=", rate)},
      {{go->read.get(), 0}, {fd, kChildFd}});
  if (!child.ok()) return child.status();
  end->child_ = std::move(*child);
  end->go_ = std::move(go->write);
  return end;
}

void VmmEnd::Go() { go_.Reset(); }

absl::StatusOr<VmmEndReport> VmmEnd::Wait() {
  Go();  // A writer still waiting for its switchover point would never end.
  const int code = child_->Wait();
  std::vector<std::string> f =
      absl::StrSplit(absl::StripTrailingAsciiWhitespace(child_->output()), ' ');
  VmmEndReport r;
  if (code == 0 && f.size() == 6 && f[0] == "ok" && absl::SimpleAtoi(f[1], &r.bytes) &&
      absl::SimpleAtoi(f[2], &r.digest) && absl::SimpleAtoi(f[3], &r.start_ns) &&
      absl::SimpleAtoi(f[4], &r.end_ns) && absl::SimpleAtod(f[5], &r.cpu_seconds)) {
    return r;
  }
  return absl::InternalError(
      absl::StrCat("VMM stream end failed (exit ", code, "): ", child_->output()));
}

int RunVmmRole(const std::string& role, uint64_t bytes, uint64_t io_size, uint64_t rate) {
  ::signal(SIGPIPE, SIG_IGN);
  if (io_size == 0 || io_size > (64u << 20)) return Fail("io size must be 1 B .. 64 MiB");
  UniqueFd stream(kChildFd);  // The channel's end the parent placed here.
  VmmEndReport r;
  StreamDigest digest;
  if (role == "writer") {
    // The content: a 4 MiB pattern, written from a moving offset so no two pieces repeat in
    // step with the write size.
    constexpr size_t kPattern = 4u << 20;
    std::vector<uint8_t> pattern(kPattern + io_size);
    for (size_t off = 0; off < pattern.size(); off += 1u << 20) {
      const size_t n = std::min<size_t>(1u << 20, pattern.size() - off);
      sim::FillChunk(7, off >> 20, 0, std::span<uint8_t>(pattern.data() + off, n));
    }
    const double cpu0 = CpuSeconds();
    r.start_ns = MonoNs();
    uint64_t at = 0;
    while (r.bytes < bytes) {
      const size_t piece = static_cast<size_t>(std::min<uint64_t>(io_size, bytes - r.bytes));
      const uint8_t* p = pattern.data() + at % kPattern;
      digest.Update(p, piece);
      size_t done = 0;
      while (done < piece) {
        ssize_t w = ::write(stream.get(), p + done, piece - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return Fail(absl::StrCat("write: ", std::strerror(errno)));
        done += w;
      }
      r.bytes += piece;
      at += piece;
      if (rate != 0) {
        // The VMM's own pace: piece k leaves no earlier than its share of the rate allows.
        const int64_t due =
            r.start_ns + static_cast<int64_t>(static_cast<double>(r.bytes) * 1e9 / rate);
        const timespec ts{static_cast<time_t>(due / 1000000000),
                          static_cast<long>(due % 1000000000)};
        while (MonoNs() < due &&
               ::clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
        }
      }
    }
    // The switchover point: the stream ends only after it (EOF on stdin: the parent said go).
    char go;
    while (::read(0, &go, 1) < 0 && errno == EINTR) {
    }
    stream.Reset();  // The end of the stream (EOF on a pipe, on a socket too: last ref).
    r.end_ns = MonoNs();
    r.cpu_seconds = CpuSeconds() - cpu0;
  } else if (role == "reader") {
    std::vector<uint8_t> buf(io_size);
    const double cpu0 = CpuSeconds();
    while (true) {
      ssize_t n = ::read(stream.get(), buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Fail(absl::StrCat("read: ", std::strerror(errno)));
      if (n == 0) break;
      if (r.bytes == 0) r.start_ns = MonoNs();
      digest.Update(buf.data(), n);
      r.bytes += n;
    }
    r.end_ns = MonoNs();
    r.cpu_seconds = CpuSeconds() - cpu0;
  } else {
    return Fail("--vmm_role must be writer or reader");
  }
  r.digest = digest.Value();
  return Report(r);
}

absl::StatusOr<DirectFigures> RunDirectVmmStreams(int devices, uint64_t bytes,
                                                  uint64_t write_size, VmmChannel kind,
                                                  uint64_t rate) {
  std::vector<std::unique_ptr<VmmEnd>> readers, writers;
  for (int i = 0; i < devices; ++i) {
    auto ch = MakeVmmChannel(kind);
    if (!ch.ok()) return ch.status();
    auto reader = VmmEnd::StartReader(ch->read_end.get(), write_size);
    if (!reader.ok()) return reader.status();
    readers.push_back(std::move(*reader));
    auto writer = VmmEnd::StartWriter(ch->write_end.get(), bytes, write_size, rate);
    if (!writer.ok()) return writer.status();
    (*writer)->Go();  // Directly connected VMMs switch over by themselves.
    writers.push_back(std::move(*writer));
  }
  DirectFigures f;
  int64_t start = INT64_MAX, end = 0;
  for (int i = 0; i < devices; ++i) {
    auto w = writers[i]->Wait();
    auto r = readers[i]->Wait();
    if (!w.ok()) return w.status();
    if (!r.ok()) return r.status();
    if (r->bytes != w->bytes || r->digest != w->digest) {
      return absl::DataLossError(absl::StrCat("direct VMM stream ", i, ": read ", r->bytes,
                                              " bytes of ", w->bytes, ", digests differ"));
    }
    f.bytes += r->bytes;
    f.vmm_cpu_seconds += w->cpu_seconds + r->cpu_seconds;
    start = std::min(start, w->start_ns);
    end = std::max(end, r->end_ns);
  }
  f.seconds = (end - start) / 1e9;
  return f;
}

}  // namespace migmover::bench
