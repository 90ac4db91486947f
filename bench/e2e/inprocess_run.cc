#include "bench/e2e/inprocess_run.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "bench/e2e/proc_stats.h"
#include "bench/e2e/thread_cpu_sampler.h"
#include "daemon/peer/peer_acceptor.h"
#include "daemon/registry/device_registry.h"
#include "daemon/session/session_manager.h"
#include "transport/api/transport_set.h"
#include "transport/base/status_macros.h"
#include "transport/stream/pump_pool.h"
#include "transport/tcp/tcp_transport.h"

namespace migmover::bench {
absl::StatusOr<InProcessResult> RunInProcess(const std::vector<sim::SimDeviceSpec>& specs,
                                             const stream::StreamOptions& options, uint32_t streams,
                                             uint64_t bandwidth, bool precopy, uint32_t workers) {
  // Each side has its own host's pump workers, as two daemons do.
  const uint32_t host_workers =
      std::clamp(std::max(std::thread::hardware_concurrency(), workers), 1u, 64u);
  ASSIGN_OR_RETURN(std::unique_ptr<stream::PumpPool> src_pumps,
                   stream::PumpPool::Create(host_workers, options.io_engine));
  ASSIGN_OR_RETURN(std::unique_ptr<stream::PumpPool> dst_pumps,
                   stream::PumpPool::Create(host_workers, options.io_engine));
  transport::TcpTransport tcp(src_pumps.get()), dst_tcp(dst_pumps.get());
  transport::TransportSet transports;
  transports.Add(&dst_tcp);
  DeviceRegistry src_devices, dst_devices;
  SessionManager src_sessions, dst_sessions;
  uint16_t port = 0;
  ASSIGN_OR_RETURN(std::unique_ptr<PeerAcceptor> acceptor,
                   PeerAcceptor::Start({"127.0.0.1", 0}, &dst_sessions));
  port = acceptor->port();
  std::vector<std::string> names;
  for (size_t i = 0; i < specs.size(); ++i) {
    names.push_back(absl::StrCat("dev", i));
    for (DeviceRegistry* reg : {&src_devices, &dst_devices}) {
      auto e = std::make_unique<DeviceEntry>();
      e->name = names.back();
      e->kind = DeviceKind::kSimulated;
      sim::SimDeviceSpec spec = specs[i];
      if (reg == &dst_devices) {
        spec = sim::SimDeviceSpec();
        spec.state_size = specs[i].state_size;
      }
      ASSIGN_OR_RETURN(e->device, sim::OpenSimulatedDevice(spec, &e->sim));
      RETURN_IF_ERROR(reg->Add(std::move(e)));
    }
  }
  DestinationConfig dc;
  dc.session_id = "inprocess";
  dc.devices = names;
  dc.stream = options;
  dc.workers = workers;
  dc.transports = &transports;
  RETURN_IF_ERROR(dst_sessions.Reserve(dc.session_id, "dst").status());
  ASSIGN_OR_RETURN(std::shared_ptr<DestinationSession> dst,
                   DestinationSession::Prepare(dc, &dst_devices));
  dst_sessions.Put(dst);
  SourceConfig sc;
  sc.session_id = dc.session_id;
  sc.devices = names;
  sc.peer = {"127.0.0.1", port};
  sc.precopy = precopy;
  sc.stream = options;
  sc.bandwidth = bandwidth;
  sc.streams = streams;
  sc.transport = &tcp;
  sc.workers = workers ? workers : std::max(1u, std::thread::hardware_concurrency());
  RETURN_IF_ERROR(src_sessions.Reserve(sc.session_id, "src").status());
  ASSIGN_OR_RETURN(std::shared_ptr<SourceSession> src, SourceSession::Start(sc, &src_devices));
  src_sessions.Put(src);

  ThreadCpuSampler sampler;
  for (int i = 0; i < 60000; ++i) {
    SessionSnapshot s = src->Snapshot();
    if (IsFinal(s.phase)) return absl::InternalError("session ended early: " + s.error.ToString());
    if (s.phase == SessionPhase::kPreCopy && (!precopy || s.precopy_rounds >= 1)) break;
    absl::SleepFor(absl::Milliseconds(2));
  }
  absl::SleepFor(absl::Milliseconds(50));
  sampler.Reset();
  RETURN_IF_ERROR(src->Switchover());
  src->Join();
  dst->Join();
  InProcessResult r;
  SessionSnapshot s = src->Snapshot(), d = dst->Snapshot();
  r.source.cpu_seconds = sampler.Seconds({"mm-src-", "mm-pump-", "mm-sim-save"});
  r.destination.cpu_seconds = sampler.Seconds({"mm-dst-", "mm-sim-resume"});
  r.source.device_cpu_seconds = sampler.Seconds({"mm-sim-save"});
  r.destination.device_cpu_seconds = sampler.Seconds({"mm-sim-resume"});
  sampler.Stop();
  if (s.phase != SessionPhase::kSucceeded) {
    return absl::InternalError(
        absl::StrCat("migration failed: ", s.error.ToString(), " / ", d.error.ToString()));
  }
  r.bytes = precopy ? s.stop_copy_bytes : s.bytes_moved;
  r.downtime_seconds = s.stop_copy_seconds;
  r.data_path = s.devices.empty() ? "" : s.devices[0].data_path;
  r.verified = d.verified;
  auto self = ReadProcStats(::getpid());
  if (self.ok()) r.source.peak_rss_bytes = r.destination.peak_rss_bytes = self->peak_rss_bytes;
  return r;
}

}  // namespace migmover::bench
