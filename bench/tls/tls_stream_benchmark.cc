// What TLS costs the stream on this machine: one connection over loopback TCP moving 64 MiB
// per iteration one way, in the clear and through TLS 1.3 (userspace relay; kernel TLS where
// the kernel has it), all measured in the same run so the ratio between them holds on a noisy
// shared machine. bench/README.md records the figures.
//   bazel run -c opt //bench/tls:tls_stream_benchmark
#include <sys/socket.h>

#include <cstdlib>
#include <string>
#include <thread>

#include "absl/time/clock.h"
#include "benchmark/benchmark.h"
#include "transport/net/socket.h"
#include "transport/tls/testing/test_pki.h"
#include "transport/tls/tls_handshake.h"

namespace migmover {
namespace {

constexpr size_t kBytes = 64 << 20;
constexpr size_t kChunk = 1 << 20;

enum Mode { kPlain = 0, kUserspaceTls = 1, kKernelTls = 2 };

std::pair<UniqueFd, UniqueFd> TcpPair() {
  uint16_t port = 0;
  auto listener = net::TcpListen({"127.0.0.1", 0}, &port);
  auto client = net::TcpConnect({"127.0.0.1", port}, absl::Seconds(5));
  auto server = net::Accept(listener->get(), absl::Seconds(5));
  if (!listener.ok() || !client.ok() || !server.ok()) std::abort();
  return {std::move(*client), std::move(*server)};
}

void BM_Stream(benchmark::State& state) {
  const Mode mode = static_cast<Mode>(state.range(0));
  auto [c, s] = TcpPair();
  UniqueFd a = std::move(c), b = std::move(s);
  std::unique_ptr<tls::testing::TestPki> pki;
  if (mode != kPlain) {
    const char* tmp = std::getenv("TMPDIR");
    auto p = tls::testing::TestPki::Create(tmp != nullptr ? tmp : "/tmp", "bench CA", "bench-");
    auto src = tls::TlsContext::Create(*(*p)->Issue("src.example"));
    auto dst = tls::TlsContext::Create(*(*p)->Issue("dst.example"));
    const auto use = mode == kKernelTls ? tls::KernelTlsUse::kAuto : tls::KernelTlsUse::kNever;
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    absl::StatusOr<tls::TlsConnection> server = absl::UnknownError("");
    std::thread t([&] {
      server = tls::EstablishTls(std::move(b), tls::TlsRole::kServer, **dst, deadline, nullptr,
                                 use);
    });
    auto client =
        tls::EstablishTls(std::move(a), tls::TlsRole::kClient, **src, deadline, nullptr, use);
    t.join();
    if (!client.ok() || !server.ok()) std::abort();
    if (mode == kKernelTls && !client->kernel) {
      state.SkipWithError("this kernel has no TLS (CONFIG_TLS)");
      return;
    }
    state.SetLabel(client->Describe());
    a = std::move(client->fd);
    b = std::move(server->fd);
  } else {
    state.SetLabel("plain TCP");
  }
  const std::string chunk(kChunk, 'm');
  std::string sink(kChunk, '\0');
  for (auto _ : state) {
    std::thread reader([&] {
      size_t got = 0;
      while (got < kBytes) {
        const ssize_t n = ::recv(b.get(), sink.data(), sink.size(), 0);
        if (n <= 0) std::abort();
        got += static_cast<size_t>(n);
      }
    });
    for (size_t sent = 0; sent < kBytes; sent += kChunk) {
      if (!net::SendAll(a.get(), chunk, absl::Now() + absl::Seconds(30)).ok()) std::abort();
    }
    reader.join();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kBytes));
}
BENCHMARK(BM_Stream)
    ->Arg(kPlain)
    ->Arg(kUserspaceTls)
    ->Arg(kKernelTls)
    ->ArgNames({"mode"})
    ->UseRealTime()
    ->MinTime(2.0);

}  // namespace
}  // namespace migmover

BENCHMARK_MAIN();
