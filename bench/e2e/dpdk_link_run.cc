#include "bench/e2e/dpdk_link_run.h"

#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "bench/e2e/proc_stats.h"
#include "bench/e2e/thread_cpu_sampler.h"
#include "daemon/device/sim/sim_driver.h"
#include "transport/base/status_macros.h"
#include "transport/dpdk/eal.h"
#include "transport/dpdk/link_stream.h"
#include "transport/dpdk/memif_pair.h"
#include "transport/dpdk/port.h"
#include "transport/dpdk/reliable_link.h"

namespace migmover::bench {
namespace {

// A stream's digest key, as the daemons derive one per stream.
peer::StreamKeys BenchKey(size_t device) {
  peer::SessionSecretBytes secret;
  secret.fill(0x5a);
  peer::HelloNonce nonce;
  nonce.fill(static_cast<uint8_t>(device));
  return *peer::DeriveStreamKeys(secret, nonce, "bench", static_cast<uint32_t>(device));
}

// The frame keys the daemons seal their links with.
peer::LinkKeys BenchLinkKeys(size_t device) {
  peer::SessionSecretBytes secret;
  secret.fill(0x5a);
  peer::ChannelBinding binding;
  binding.fill(0x3c);
  peer::HelloNonce nonce;
  nonce.fill(static_cast<uint8_t>(device));
  return *peer::DeriveLinkKeys(secret, binding, nonce, "bench", static_cast<uint32_t>(device));
}

// What one device's pair of threads reports.
struct DeviceRun {
  absl::Status source = absl::OkStatus(), destination = absl::OkStatus();
  uint64_t bytes = 0;
  absl::Time committed;
};

// Frame buffers per port: the link's window held by the sender, the receive ring, frames waiting
// for the reader, and slack for acks.
constexpr uint32_t kBuffersPerPort = 2047;

}  // namespace

absl::StatusOr<InProcessResult> RunDpdkLinkInProcess(const std::vector<sim::SimDeviceSpec>& specs,
                                                     uint32_t chunk_size, bool sealed) {
  dpdk::EalOptions eal;
  // Two ports per device, each with its pool of 9 KiB frames and memif's rings (as much again),
  // plus DPDK's own needs. Anonymous memory: only what is touched becomes resident.
  eal.memory_mb = 64 + static_cast<int>(specs.size()) * 2 * 2 * (kBuffersPerPort * 33500 >> 20);
  RETURN_IF_ERROR(dpdk::InitEal(eal));
  static std::atomic<int> run_counter{0};
  const int run = run_counter.fetch_add(1);

  struct Device {
    std::unique_ptr<VfioDevice> src, dst;
    dpdk::DpdkPort* src_port = nullptr;
    dpdk::DpdkPort* dst_port = nullptr;
    std::unique_ptr<dpdk::ReliableLink> src_link, dst_link;
    DeviceRun out;
  };
  std::vector<Device> devs(specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    Device& d = devs[i];
    ASSIGN_OR_RETURN(d.src, sim::OpenSimulatedDevice(specs[i]));
    sim::SimDeviceSpec dst_spec;
    dst_spec.state_size = specs[i].state_size;
    ASSIGN_OR_RETURN(d.dst, sim::OpenSimulatedDevice(dst_spec));
    // Kept across runs (memif_pair.h says why); each run's links get new ids.
    ASSIGN_OR_RETURN(dpdk::MemifPair * pair,
                     dpdk::KeptMemifPair(absl::StrCat("bench", i), kBuffersPerPort));
    d.src_port = pair->server.get();
    d.dst_port = pair->client.get();
    const dpdk::LinkOptions lo =
        dpdk::SessionLinkOptions((static_cast<uint64_t>(run) << 32) | (i + 1), absl::Seconds(30),
                                 d.src_port->frame_capacity());
    ASSIGN_OR_RETURN(d.src_link, dpdk::ReliableLink::Create(d.src_port, lo));
    ASSIGN_OR_RETURN(d.dst_link, dpdk::ReliableLink::Create(d.dst_port, lo));
    if (auto s = d.src->SetState(MigState::kStop); !s.ok()) return s.status();
  }

  dpdk::LinkStreamOptions so;
  so.chunk_size = chunk_size;
  std::atomic<bool> stop{false}, cancel{false};
  absl::Notification go;
  std::vector<std::thread> threads;
  for (size_t i = 0; i < devs.size(); ++i) {
    Device* d = &devs[i];
    threads.emplace_back([d, i, &so, &cancel, sealed] {
      pthread_setname_np(pthread_self(), absl::StrCat("mm-dst-dpdk", i).c_str());
      auto fd = d->dst->SetState(MigState::kResuming);
      if (!fd.ok()) {
        d->out.destination = fd.status();
        return;
      }
      dpdk::LinkStreamReceiver r(d->dst_link.get(), static_cast<uint32_t>(i), so);
      // Sealed frames, as the daemons' links are, so the cipher's cost is in the figure.
      if (absl::Status k = (sealed ? r.Protect(BenchKey(i), BenchLinkKeys(i)) : r.Protect(BenchKey(i))); !k.ok()) {
        d->out.destination = k;
        return;
      }
      auto got = r.Receive(fd->get(), cancel);
      fd->Reset();
      absl::Status verdict = got.status();
      // RESUMING -> STOP: the simulated device checks the whole stream it was given.
      if (verdict.ok()) verdict = d->dst->SetState(MigState::kStop).status();
      d->out.destination = verdict;
      r.SendCommit(verdict).IgnoreError();
    });
    threads.emplace_back([d, i, &so, &go, &stop, &cancel, sealed] {
      pthread_setname_np(pthread_self(), absl::StrCat("mm-src-dpdk", i).c_str());
      go.WaitForNotification();
      dpdk::LinkStreamSender s(d->src_link.get(), static_cast<uint32_t>(i), so);
      auto fd = d->src->SetState(MigState::kStopCopy);  // The switchover.
      absl::Status st = fd.status();
      if (st.ok()) st = (sealed ? s.Protect(BenchKey(i), BenchLinkKeys(i)) : s.Protect(BenchKey(i)));
      if (st.ok()) {
        auto pumped = s.Pump(fd->get(), wire::Phase::kStopCopy, UINT64_MAX, stop, cancel);
        st = pumped.status();
        if (st.ok()) d->out.bytes = pumped->bytes;
      }
      if (st.ok()) st = s.EndStream();
      if (st.ok()) st = s.AwaitCommit(absl::Seconds(60), cancel);
      d->out.committed = absl::Now();
      d->out.source = st;
    });
  }
  ThreadCpuSampler sampler;
  absl::SleepFor(absl::Milliseconds(50));
  sampler.Reset();
  const absl::Time start = absl::Now();
  go.Notify();
  for (auto& t : threads) t.join();

  InProcessResult r;
  r.source.cpu_seconds = sampler.Seconds({"mm-src-", "mm-pump-", "mm-sim-save"});
  r.destination.cpu_seconds = sampler.Seconds({"mm-dst-", "mm-sim-resume"});
  r.source.device_cpu_seconds = sampler.Seconds({"mm-sim-save"});
  r.destination.device_cpu_seconds = sampler.Seconds({"mm-sim-resume"});
  sampler.Stop();
  absl::Time last = start;
  r.verified = true;
  for (size_t i = 0; i < devs.size(); ++i) {
    const DeviceRun& o = devs[i].out;
    if (!o.source.ok() || !o.destination.ok()) {
      return absl::InternalError(absl::StrCat("device ", i,
                                              " over DPDK: source: ", o.source.ToString(),
                                              "; destination: ", o.destination.ToString()));
    }
    r.bytes += o.bytes;
    last = std::max(last, o.committed);
  }
  r.downtime_seconds = absl::ToDoubleSeconds(last - start);
  r.data_path = "copy";  // readv/writev straight into and out of the frames.
  auto self = ReadProcStats(::getpid());
  if (self.ok()) r.source.peak_rss_bytes = r.destination.peak_rss_bytes = self->peak_rss_bytes;
  return r;
}

}  // namespace migmover::bench
