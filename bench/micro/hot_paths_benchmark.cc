// Micro-benchmarks of the pieces on migmover's per-chunk hot path. Run:
//   bazel run -c opt //bench/micro:hot_paths_benchmark
#include <liburing.h>

#include <cstring>
#include <vector>

#include "benchmark/benchmark.h"
#include "daemon/device/fsm_path.h"
#include "daemon/device/sim/sim_stream.h"
#include "transport/base/stream_digest.h"
#include "transport/peer/frame_codec.h"
#include "transport/peer/stream_auth.h"
#include "transport/stream/rate_limiter.h"
#include "xxhash.h"

namespace migmover {
namespace {

void BM_FrameHeaderEncodeDecode(benchmark::State& state) {
  wire::FrameHeader h{wire::kFrameMagic, static_cast<uint8_t>(wire::FrameType::kData),
                      static_cast<uint8_t>(wire::Phase::kStopCopy), 0, 3, 1 << 20, 0, 0};
  uint8_t buf[wire::kFrameHeaderSize];
  for (auto _ : state) {
    ++h.seq;
    h.offset += 1 << 20;
    peer::EncodeHeader(h, buf);
    auto d = peer::DecodeHeader(buf);
    benchmark::DoNotOptimize(d);
  }
}
BENCHMARK(BM_FrameHeaderEncodeDecode);

// The stream digest over one chunk: what the copy path adds per byte on each side.
void BM_StreamDigestXxh3(benchmark::State& state) {
  std::vector<uint8_t> buf(state.range(0), 0x5a);
  XXH3_state_t* st = XXH3_createState();
  XXH3_64bits_reset(st);
  for (auto _ : state) {
    XXH3_64bits_update(st, buf.data(), buf.size());
    benchmark::ClobberMemory();
  }
  benchmark::DoNotOptimize(XXH3_64bits_digest(st));
  XXH3_freeState(st);
  state.SetBytesProcessed(state.iterations() * buf.size());
}
BENCHMARK(BM_StreamDigestXxh3)->Arg(64 << 10)->Arg(1 << 20);

// The same through StreamDigest, which uses libxxhash's CPU dispatch (AVX2/AVX-512).
void BM_StreamDigestDispatched(benchmark::State& state) {
  std::vector<uint8_t> buf(state.range(0), 0x5a);
  StreamDigest d;
  for (auto _ : state) {
    d.Update(buf.data(), buf.size());
    benchmark::ClobberMemory();
  }
  benchmark::DoNotOptimize(d.Value());
  state.SetBytesProcessed(state.iterations() * buf.size());
}
BENCHMARK(BM_StreamDigestDispatched)->Arg(64 << 10)->Arg(1 << 20);

// The keyed stream digest the copy path computes now (Poly1305, OpenSSL's vector code): what
// integrity costs per byte on each side, against the unkeyed XXH3 above, in the same run.
void BM_StreamMacPoly1305(benchmark::State& state) {
  std::vector<uint8_t> buf(state.range(0), 0x5a);
  peer::StreamKey key;
  key.bytes.fill(7);
  auto mac = peer::StreamMac::Create(key);
  if (!mac.ok()) {
    state.SkipWithError(std::string(mac.status().message()).c_str());
    return;
  }
  for (auto _ : state) {
    (*mac)->Update(buf.data(), buf.size());
    benchmark::ClobberMemory();
  }
  benchmark::DoNotOptimize((*mac)->Finish());
  state.SetBytesProcessed(state.iterations() * buf.size());
}
BENCHMARK(BM_StreamMacPoly1305)->Arg(64 << 10)->Arg(1 << 20);

// A verdict's seal (HMAC-SHA256 of a COMMIT): paid once per device per migration.
void BM_VerdictSeal(benchmark::State& state) {
  peer::ControlKey key;
  key.bytes.fill(9);
  const std::string commit =
      peer::EncodeStatusFrame(wire::FrameType::kCommit, 1, 0, peer::PeerStatus{0, ""});
  for (auto _ : state) benchmark::DoNotOptimize(peer::SealVerdict(commit, &key));
}
BENCHMARK(BM_VerdictSeal);

void BM_FsmPathFinding(benchmark::State& state) {
  const MigFeatures f{MigFeatures::kStopCopy | MigFeatures::kP2P | MigFeatures::kPreCopy};
  int i = 0;
  for (auto _ : state) {
    auto from = kAllMigStates[1 + i % 7];
    auto to = kAllMigStates[1 + (i / 7) % 7];
    benchmark::DoNotOptimize(FindFsmPath(f, from, to));
    ++i;
  }
}
BENCHMARK(BM_FsmPathFinding);

void BM_RateLimiterReserve(benchmark::State& state) {
  stream::RateLimiter rl(state.range(0));
  for (auto _ : state) benchmark::DoNotOptimize(rl.Reserve(1 << 20));
}
BENCHMARK(BM_RateLimiterReserve)->Arg(0)->Arg(1ull << 40);

// The simulated device's content generation and check: the sim's own cost per byte, which every
// end-to-end figure includes on both sides.
void BM_SimChunkFill(benchmark::State& state) {
  std::vector<uint8_t> buf(256 << 10);
  uint32_t gen = 0;
  for (auto _ : state) {
    sim::FillChunk(7, 3, ++gen, std::span<uint8_t>(buf));
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * buf.size());
}
BENCHMARK(BM_SimChunkFill);

// Submission batching: N no-op requests submitted one io_uring_enter each, or all at once.
void BM_UringSubmitBatch(benchmark::State& state) {
  io_uring ring;
  if (io_uring_queue_init(256, &ring, 0) != 0) {
    state.SkipWithError("io_uring unavailable");
    return;
  }
  const int batch = static_cast<int>(state.range(0));
  for (auto _ : state) {
    for (int i = 0; i < 64; i += batch) {
      for (int j = 0; j < batch; ++j) io_uring_prep_nop(io_uring_get_sqe(&ring));
      io_uring_submit_and_wait(&ring, batch);
      io_uring_cqe* cqe;
      unsigned head, seen = 0;
      io_uring_for_each_cqe(&ring, head, cqe) { ++seen; }
      io_uring_cq_advance(&ring, seen);
    }
  }
  state.SetItemsProcessed(state.iterations() * 64);
  io_uring_queue_exit(&ring);
}
BENCHMARK(BM_UringSubmitBatch)->Arg(1)->Arg(8)->Arg(64);

}  // namespace
}  // namespace migmover

BENCHMARK_MAIN();
