// migmover-bench: end-to-end throughput, CPU cost, downtime and memory of a migration between
// two real migmoverd processes on this machine, optionally against a raw-TCP baseline measured
// in the same run (figures as ratios, since machines here are shared and noisy).
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "bench/e2e/dpdk_link_run.h"
#include "bench/e2e/inprocess_run.h"
#include "bench/e2e/machine_limits.h"
#include "bench/e2e/proc_stats.h"
#include "bench/e2e/thread_cpu_sampler.h"
#include "bench/e2e/vmm_stream.h"
#include "daemon/intake/fd_intake.h"
#include "bench/e2e/raw_tcp_baseline.h"
#include "daemon/base/log.h"
#include "daemon/device/sim/sim_device_spec.h"
#include "daemon/testing/daemon_process.h"
#include "grpcpp/grpcpp.h"
#include "transport/net/socket.h"
#include "transport/stream/data_path.h"

ABSL_FLAG(int, devices, 1, "Simulated devices migrated at once (by each session).");
ABSL_FLAG(int, sessions, 1,
          "Migrations at once between the two daemons (1..64), each of --devices devices; "
          "throughput is all of their bytes over the first Switchover to the last COMMIT, "
          "downtime the longest session's. Each run also migrates the same devices in one "
          "session, for the ratio of N sessions to one.");
ABSL_FLAG(std::string, device_size, "1GiB", "State size of each device (units: KiB MiB GiB).");
ABSL_FLAG(int, streams, 1,
          "Connections each device's stream is striped over (1..16). The baseline then runs "
          "that many raw pairs per device, each moving its share of the device's bytes.");
ABSL_FLAG(std::string, chunk_size, "256KiB",
          "Bytes per DATA frame and per data-fd read (the daemons' default), and the raw loop's "
          "buffer.");
ABSL_FLAG(std::string, pipe_size, "0",
          "Intermediate pipe size for the splice path (0 = the chunk size; above 1 MiB needs "
          "root, as /proc/sys/fs/pipe-max-size caps it).");
ABSL_FLAG(std::string, data_path, "auto", "auto, splice or copy.");
ABSL_FLAG(uint32_t, dpdk_queues, 1, "--transport=dpdk: queue pairs on each daemon's port.");
ABSL_FLAG(std::string, transport, "tcp",
          "tcp: device streams over loopback TCP. dpdk: each device stream on its own link over "
          "a net_memif port per daemon (--streams must be 1); with --inprocess, only the "
          "STOP_COPY streams over net_memif port pairs in this process, no sessions.");
ABSL_FLAG(std::string, bandwidth, "0", "Bandwidth cap per migration (bytes/s, units), 0 = none.");
ABSL_FLAG(bool, precopy, false,
          "Run PRE_COPY before the switchover (default: off, so the whole state moves in "
          "STOP_COPY and throughput = bytes / downtime).");
ABSL_FLAG(int, workers, 0,
          "Source pump threads per migration (0 = the daemon's default: one per core).");
ABSL_FLAG(bool, send_zc, false, "Copy path sends with SEND_ZC (no gain possible on loopback).");
ABSL_FLAG(std::string, tcp_congestion, "",
          "TCP congestion control of every data connection, ours and the baseline's (e.g. cubic); "
          "empty = the system's default.");
ABSL_FLAG(std::string, io_engine, "",
          "Both daemons' --io_engine (auto, uring, syscalls); empty: the daemons' default.");
ABSL_FLAG(std::string, reconnect_window_ms, "",
          "Both daemons' --reconnect_window_ms (0: streams do not resume, and may splice); empty: "
          "the daemons' default (5 s).");
ABSL_FLAG(std::string, replay_buffer, "",
          "The source daemon's --replay_buffer (per device, with units); empty: its default.");
ABSL_FLAG(bool, baseline, false,
          "Also measure, in the same run, what the machine allows: the raw loop (a plain "
          "read/send and recv/write process pair per stream on the same devices), iperf3 (one "
          "stream per migmover stream), memcpy and AES-128-GCM, and the modelled limit "
          "(bench/README.md); prints migmover's ratio to each.");
ABSL_FLAG(std::string, device, "image",
          "image: the benchmark device, whose data fds cost what a real driver's do (its state "
          "is served from a prepared memory image and checked by a digest as it passes). "
          "checked: the tests' device, which generates and compares every byte on the path.");
ABSL_FLAG(std::string, peer_security, "tls",
          "tls: the daemons' peers run TLS 1.3 (throw-away certificates, kernel TLS where the "
          "kernel has it), as deployed; plaintext: --plaintext_peers (keyed digest only).");
ABSL_FLAG(std::string, dpdk_frames, "sealed",
          "--transport=dpdk --inprocess: sealed (every link frame encrypted and authenticated, as "
          "the daemons run) or digest (frames in clear, the stream's keyed Poly1305 digest): the "
          "cost of sealing, measured in one run.");
ABSL_FLAG(bool, thread_cpu, false,
          "Also report each daemon's CPU per GB by thread name (pump workers, gRPC, io_uring's "
          "io-wq workers, ...). Samples every thread every 5 ms, which costs the daemons a little.");
ABSL_FLAG(bool, json, false, "Print one JSON object instead of the table.");
ABSL_FLAG(int, repeat, 1, "Runs of each; the median by throughput is reported.");
ABSL_FLAG(bool, inprocess, false,
          "Quick run: both sides inside this process (same session code, no daemons, no gRPC). "
          "CPU per side comes from sampling thread CPU by role; peak RSS is this process's.");
ABSL_FLAG(std::string, migmoverd, "", "Path of migmoverd (default: next to this binary).");
ABSL_FLAG(std::string, vmm_write_size, "0",
          "Not 0: each device is a VMM's own migration stream in data-fd mode: a writer process "
          "writes --device_size bytes in pieces of this size (QEMU's QEMUFile: 32KiB) into a "
          "socket or pipe the source daemon reads, and a reader process reads the destination "
          "daemon's data fd in pieces of the same size; the session runs PRE_COPY and switches "
          "over once the streams crossed. Compared with the same writer and reader connected "
          "directly, in the same run (the direct row).");
ABSL_FLAG(std::string, vmm_channel, "socket",
          "--vmm_write_size: socket (a unix socketpair, as QEMU's fd: migration) or pipe.");
ABSL_FLAG(std::string, vmm_rate, "0",
          "--vmm_write_size: each writer's own pace in bytes per second (units: KiB MiB GiB), as "
          "a VMM's rate limit sets it (QEMU's max-bandwidth); 0 = as fast as the channel takes "
          "the pieces.");
// The VMM stream's child processes (vmm_stream.h); not for users.
ABSL_FLAG(std::string, vmm_role, "", "internal: writer or reader (a child of migmover-bench)");
ABSL_FLAG(uint64_t, vmm_child_bytes, 0, "internal");
ABSL_FLAG(uint64_t, vmm_child_io_size, 0, "internal");
ABSL_FLAG(uint64_t, vmm_child_rate, 0, "internal");

namespace migmover::bench {
namespace {

using v1::SessionStatus;

struct Figures {
  uint64_t bytes = 0;
  double seconds = 0;
  double downtime = 0;
  SideFigures source, destination;
  std::string data_path;
  std::string security, integrity;  // The destination's first device's.
  bool verified = false;
  double vmm_cpu_seconds = 0;  // VMM mode: the writers' and readers' own.
  // --thread_cpu: each daemon's CPU seconds by thread name (ThreadCpuSampler::ByName).
  std::map<std::string, double> source_threads, destination_threads;

  double throughput() const { return seconds > 0 ? bytes / seconds : 0; }
  double cpu_per_gb(const SideFigures& s) const {
    return bytes ? s.cpu_seconds / (bytes / 1e9) : 0;
  }
  double mover_cpu_per_gb(const SideFigures& s) const {
    return bytes ? s.mover_cpu_seconds() / (bytes / 1e9) : 0;
  }
  double device_cpu_per_gb(const SideFigures& s) const {
    return bytes ? s.device_cpu_seconds / (bytes / 1e9) : 0;
  }
};

absl::Status Check(const grpc::Status& s, const char* what) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      absl::StrCat(what, ": ", s.error_message()));
}

// --vmm_write_size: each device is a VMM's stream in data-fd mode (vmm_stream.h).
struct VmmMode {
  uint64_t write_size = 0;  // 0: simulated devices.
  uint64_t rate = 0;        // Each writer's pace in bytes/s; 0: as fast as it can.
  VmmChannel channel = VmmChannel::kSocket;
};

// `sessions` sessions, each migrating `specs` (the k-th session's seeds shifted by 1000 k).
absl::StatusOr<Figures> RunOurs(const std::vector<sim::SimDeviceSpec>& specs, int run,
                                const VmmMode& vmm, int sessions) {
  const std::string binary = absl::GetFlag(FLAGS_migmoverd).empty()
                                 ? testing::MigmoverdPath()
                                 : absl::GetFlag(FLAGS_migmoverd);
  std::vector<std::string> flags = {"--data_path=" + absl::GetFlag(FLAGS_data_path),
                                    "--log_level=warning",
                                    "--tcp_congestion=" + absl::GetFlag(FLAGS_tcp_congestion)};
  if (!absl::GetFlag(FLAGS_io_engine).empty()) {
    flags.push_back("--io_engine=" + absl::GetFlag(FLAGS_io_engine));
  }
  if (!absl::GetFlag(FLAGS_reconnect_window_ms).empty()) {
    flags.push_back("--reconnect_window_ms=" + absl::GetFlag(FLAGS_reconnect_window_ms));
  }
  if (!absl::GetFlag(FLAGS_replay_buffer).empty()) {
    flags.push_back("--replay_buffer=" + absl::GetFlag(FLAGS_replay_buffer));
  }
  const std::string security = absl::GetFlag(FLAGS_peer_security);
  if (security == "plaintext") {
    flags.push_back("--plaintext_peers");
  } else if (security != "tls") {
    return absl::InvalidArgumentError("--peer_security must be tls or plaintext");
  }
  // tls: DaemonProcess gives each daemon a certificate from one throw-away CA.
  std::vector<std::string> src_flags = flags, dst_flags = flags;
  const bool dpdk = absl::GetFlag(FLAGS_transport) == "dpdk";
  if (dpdk) {
    // One net_memif port per daemon, the destination's the server.
    const std::string sock = absl::StrCat("migmover-bench-", ::getpid(), "-", run);
    dst_flags.push_back(absl::StrCat("--dpdk_port=net_memif0,role=server,socket=", sock));
    src_flags.push_back(absl::StrCat("--dpdk_port=net_memif0,role=client,socket=", sock));
    for (auto* f : {&src_flags, &dst_flags}) {
      f->push_back(absl::StrCat("--dpdk_queues=", absl::GetFlag(FLAGS_dpdk_queues)));
    }
  }
  auto dst = testing::DaemonProcess::Start(binary, "bench-dst", dst_flags);
  if (!dst.ok()) return dst.status();
  auto src = testing::DaemonProcess::Start(binary, "bench-src", src_flags);
  if (!src.ok()) return src.status();
  if (vmm.write_size != 0) sessions = 1;
  std::vector<std::string> ids;
  for (int k = 0; k < sessions; ++k) ids.push_back(absl::StrCat("bench-", run, "-", k));
  auto chunk = sim::ParseByteSize(absl::GetFlag(FLAGS_chunk_size));
  auto bandwidth = sim::ParseByteSize(absl::GetFlag(FLAGS_bandwidth));
  if (!chunk.ok()) return chunk.status();
  if (!bandwidth.ok()) return bandwidth.status();

  std::vector<std::string> names;
  std::vector<std::vector<std::string>> session_names(sessions);
  // VMM mode: the writers' and readers' ends of each device's channels.
  std::vector<UniqueFd> vmm_writer_fds, vmm_reader_fds;
  for (size_t i = 0; i < specs.size() && vmm.write_size != 0; ++i) {
    names.push_back(absl::StrCat("vm", i));
    auto in = MakeVmmChannel(vmm.channel);
    auto out = MakeVmmChannel(vmm.channel);
    if (!in.ok()) return in.status();
    if (!out.ok()) return out.status();
    for (auto* d : {src->get(), dst->get()}) {
      const bool source = d == src->get();
      auto handle = SendFdToIntake(d->fd_socket(),
                                   source ? FdPurpose::kSaveData : FdPurpose::kResumeData,
                                   source ? in->read_end.get() : out->write_end.get());
      if (!handle.ok()) return handle.status();
      grpc::ClientContext ctx;
      v1::AttachDeviceRequest req;
      req.set_name(names.back());
      req.set_fd_handle(*handle);
      v1::Device dev;
      auto s = Check(d->stub()->AttachDevice(&ctx, req, &dev), "AttachDevice");
      if (!s.ok()) return s;
    }
    vmm_writer_fds.push_back(std::move(in->write_end));
    vmm_reader_fds.push_back(std::move(out->read_end));
    session_names[0].push_back(names.back());
  }
  for (size_t j = 0; j < specs.size() * sessions && vmm.write_size == 0; ++j) {
    const size_t i = j % specs.size(), k = j / specs.size();
    names.push_back(sessions == 1 ? absl::StrCat("dev", i) : absl::StrCat("s", k, "-dev", i));
    session_names[k].push_back(names.back());
    sim::SimDeviceSpec spec = specs[i];
    spec.seed += 1000 * k;
    for (auto* d : {src->get(), dst->get()}) {
      grpc::ClientContext ctx;
      v1::AttachDeviceRequest req;
      req.set_name(names.back());
      req.set_simulated(d == src->get() ? spec.ToString()
                                        : absl::StrCat("size=", spec.state_size));
      v1::Device out;
      auto s = Check(d->stub()->AttachDevice(&ctx, req, &out), "AttachDevice");
      if (!s.ok()) return s;
    }
  }
  v1::TransferOptions opts;
  opts.set_chunk_size(static_cast<uint32_t>(*chunk));
  opts.set_streams(absl::GetFlag(FLAGS_streams));
  opts.set_send_zc(absl::GetFlag(FLAGS_send_zc));
  opts.set_transport(absl::GetFlag(FLAGS_transport));
  opts.set_workers(static_cast<uint32_t>(std::max(0, absl::GetFlag(FLAGS_workers))));
  auto pipe_size = sim::ParseByteSize(absl::GetFlag(FLAGS_pipe_size));
  if (!pipe_size.ok()) return pipe_size.status();
  opts.set_pipe_size(static_cast<uint32_t>(*pipe_size));
  for (int k = 0; k < sessions; ++k) {
  std::string secret;  // Generated by the destination, presented by the source.
  {
    grpc::ClientContext ctx;
    v1::PrepareDestinationRequest req;
    req.set_session_id(ids[k]);
    for (auto& n : session_names[k]) req.add_devices(n);
    *req.mutable_options() = opts;
    SessionStatus out;
    auto s = Check((*dst)->stub()->PrepareDestination(&ctx, req, &out), "PrepareDestination");
    if (!s.ok()) return s;
    secret = out.token();
  }
  {
    grpc::ClientContext ctx;
    v1::StartSourceRequest req;
    req.set_session_id(ids[k]);
    for (auto& n : session_names[k]) req.add_devices(n);
    req.set_peer((*dst)->peer_address());
    req.set_token(secret);
    // A VMM's stream flows in PRE_COPY as the VMM writes it.
    req.set_precopy(absl::GetFlag(FLAGS_precopy) || vmm.write_size != 0);
    req.set_bandwidth_bytes_per_second(*bandwidth);
    *req.mutable_options() = opts;
    SessionStatus out;
    auto s = Check((*src)->stub()->StartSource(&ctx, req, &out), "StartSource");
    if (!s.ok()) return s;
  }
  }
  auto get = [&](testing::DaemonProcess& d, const std::string& session) {
    grpc::ClientContext ctx;
    v1::GetSessionRequest req;
    req.set_session_id(session);
    SessionStatus out;
    d.stub()->GetSession(&ctx, req, &out);
    return out;
  };
  auto final = [](const SessionStatus& s) {
    return s.phase() == SessionStatus::SUCCEEDED || s.phase() == SessionStatus::FAILED ||
           s.phase() == SessionStatus::CANCELLED;
  };
  const bool vmm_mode = vmm.write_size != 0;
  // Connected, and (with --precopy) the initial data sent.
  for (int i = 0, k = 0; i < 6000 && k < sessions;) {
    SessionStatus s = get(**src, ids[k]);
    if (final(s)) return absl::InternalError("session ended before switchover: " + s.error());
    if (s.phase() == SessionStatus::PRE_COPY &&
        (!absl::GetFlag(FLAGS_precopy) || vmm_mode || s.precopy_rounds() >= 1)) {
      ++k;  // This one is ready: the next session.
      continue;
    }
    ++i;
    absl::SleepFor(absl::Milliseconds(10));
  }
  absl::SleepFor(absl::Milliseconds(100));  // Every device's connection is up.
  // The simulated devices' threads (mm-sim-*) are the device's; the rest is the mover's.
  // Only they are sampled often: reading every thread of a daemon every 5 ms would cost the
  // daemon (32 sessions: ~100 threads) a part of the CPU being measured.
  // --thread_cpu samples them all.
  const std::vector<std::string> track =
      absl::GetFlag(FLAGS_thread_cpu) ? std::vector<std::string>{}
                                      : std::vector<std::string>{"mm-sim-"};
  ThreadCpuSampler src_threads((*src)->pid(), track), dst_threads((*dst)->pid(), track);
  src_threads.Reset();
  dst_threads.Reset();
  auto cpu0_src = ReadProcStats((*src)->pid());
  auto cpu0_dst = ReadProcStats((*dst)->pid());
  if (!cpu0_src.ok() || !cpu0_dst.ok()) return absl::InternalError("cannot read /proc");
  std::vector<std::unique_ptr<VmmEnd>> vmm_readers, vmm_writers;
  if (vmm_mode) {
    for (auto& fd : vmm_reader_fds) {
      auto r = VmmEnd::StartReader(fd.get(), vmm.write_size);
      if (!r.ok()) return r.status();
      vmm_readers.push_back(std::move(*r));
      fd.Reset();
    }
    for (size_t i = 0; i < vmm_writer_fds.size(); ++i) {
      auto w = VmmEnd::StartWriter(vmm_writer_fds[i].get(), specs[i].state_size, vmm.write_size,
                                   vmm.rate);
      if (!w.ok()) return w.status();
      vmm_writers.push_back(std::move(*w));
      vmm_writer_fds[i].Reset();
    }
    // Switch over once every VMM's stream crossed in PRE_COPY, as an agent does when its VMM
    // reaches its own switchover point (QEMU's last part is small).
    uint64_t total = 0;
    for (const auto& spec : specs) total += spec.state_size;
    const absl::Time deadline = absl::Now() + absl::Minutes(10);
    while (true) {
      SessionStatus st = get(**src, ids[0]);  // VMM mode runs one session.
      if (final(st)) return absl::InternalError("session ended before switchover: " + st.error());
      if (st.precopy_bytes() >= total) break;
      if (absl::Now() > deadline) return absl::DeadlineExceededError("VMM streams too slow");
      // Polled as an agent would, not so often that the daemon's gRPC threads become part
      // of the CPU measured (1 ms polls were a third of the source's CPU at 128 MiB/s).
      absl::SleepFor(absl::Milliseconds(5));
    }
  }
  const absl::Time t0 = absl::Now();
  std::vector<absl::Time> switched;  // When each session's Switchover was asked for.
  for (const std::string& session : ids) {
    switched.push_back(absl::Now());
    grpc::ClientContext ctx;
    v1::SwitchoverRequest req;
    req.set_session_id(session);
    SessionStatus out;
    auto s = Check((*src)->stub()->Switchover(&ctx, req, &out), "Switchover");
    if (!s.ok()) return s;
  }
  for (auto& w : vmm_writers) w->Go();
  std::vector<SessionStatus> all_s(sessions), all_d(sessions);
  for (int k = 0; k < sessions; ++k) {
    while (true) {
      all_s[k] = get(**src, ids[k]);
      if (final(all_s[k])) break;
      if (absl::Now() - t0 > absl::Minutes(10)) return absl::DeadlineExceededError("too slow");
      absl::SleepFor(absl::Milliseconds(20));
    }
  }
  for (int k = 0; k < sessions; ++k) {
    for (int i = 0; i < 500; ++i) {
      all_d[k] = get(**dst, ids[k]);
      if (final(all_d[k])) break;
      absl::SleepFor(absl::Milliseconds(10));
    }
  }
  SessionStatus s = all_s[0], d = all_d[0];
  for (int k = 0; k < sessions; ++k) {
    if (all_s[k].phase() != SessionStatus::SUCCEEDED) {
      s = all_s[k];
      d = all_d[k];
    }
  }
  auto cpu1_src = ReadProcStats((*src)->pid());
  auto cpu1_dst = ReadProcStats((*dst)->pid());
  if (!cpu1_src.ok() || !cpu1_dst.ok()) return absl::InternalError("cannot read /proc");
  const double src_device_cpu = src_threads.Seconds({"mm-sim-"});
  const double dst_device_cpu = dst_threads.Seconds({"mm-sim-"});
  std::map<std::string, double> src_by_name, dst_by_name;
  if (absl::GetFlag(FLAGS_thread_cpu)) {
    src_by_name = src_threads.ByName();
    dst_by_name = dst_threads.ByName();
  }
  if (s.phase() != SessionStatus::SUCCEEDED) {
    return absl::InternalError(absl::StrCat("migration failed: ", s.error(), " / ", d.error()));
  }
  Figures f;
  // Without precopy every byte moves after the switchover; with it, what STOP_COPY moved.
  f.bytes = 0;
  f.downtime = f.seconds = 0;
  f.verified = true;
  for (int k = 0; k < sessions; ++k) {
    f.bytes += absl::GetFlag(FLAGS_precopy) ? all_s[k].stop_copy_bytes() : all_s[k].bytes_moved();
    // All sessions together: from the first Switchover to the last session's last COMMIT.
    f.seconds = std::max(f.seconds, absl::ToDoubleSeconds(switched[k] - switched[0]) +
                                        all_s[k].stop_copy_seconds());
    f.downtime = std::max(f.downtime, all_s[k].stop_copy_seconds());
    f.verified = f.verified && all_d[k].verified();
  }
  bool vmm_exact = true;
  if (vmm_mode) {
    // The VMMs' view: from the first write to the last byte read on the other side.
    int64_t start = INT64_MAX, end = 0;
    f.bytes = 0;
    for (size_t i = 0; i < vmm_writers.size(); ++i) {
      auto w = vmm_writers[i]->Wait();
      auto r = vmm_readers[i]->Wait();
      if (!w.ok()) return w.status();
      if (!r.ok()) return r.status();
      vmm_exact = vmm_exact && w->bytes == r->bytes && w->digest == r->digest;
      f.bytes += r->bytes;
      f.vmm_cpu_seconds += w->cpu_seconds + r->cpu_seconds;
      start = std::min(start, w->start_ns);
      end = std::max(end, r->end_ns);
    }
    f.seconds = (end - start) / 1e9;
  }
  f.source = {cpu1_src->cpu_seconds - cpu0_src->cpu_seconds, src_device_cpu,
              cpu1_src->peak_rss_bytes};
  f.destination = {cpu1_dst->cpu_seconds - cpu0_dst->cpu_seconds, dst_device_cpu,
                   cpu1_dst->peak_rss_bytes};
  f.source_threads = std::move(src_by_name);
  f.destination_threads = std::move(dst_by_name);
  f.data_path = s.devices_size() ? s.devices(0).data_path() : "";
  if (d.devices_size() > 0) {
    f.security = d.devices(0).security();
    f.integrity = d.devices(0).integrity();
  }
  f.verified = f.verified && vmm_exact;
  return f;
}

std::string Human(double bytes) {
  const char* units[] = {"B", "kB", "MB", "GB"};
  int u = 0;
  while (bytes >= 1000 && u < 3) {
    bytes /= 1000;
    ++u;
  }
  return absl::StrFormat("%.2f %s", bytes, units[u]);
}

std::string Side(double source, double destination) {
  return absl::StrFormat("{\"source\":%.4f,\"destination\":%.4f}", source, destination);
}

std::string FiguresJson(const Figures& f, bool with_extra) {
  std::string j = absl::StrFormat(
      "\"throughput_bytes_per_s\":%.1f,\"bytes\":%d,\"seconds\":%.6f,"
      "\"cpu_seconds_per_gb\":%s,\"mover_cpu_seconds_per_gb\":%s,"
      "\"device_cpu_seconds_per_gb\":%s,\"peak_rss_bytes\":{\"source\":%d,\"destination\":%d}",
      f.throughput(), f.bytes, f.seconds, Side(f.cpu_per_gb(f.source), f.cpu_per_gb(f.destination)),
      Side(f.mover_cpu_per_gb(f.source), f.mover_cpu_per_gb(f.destination)),
      Side(f.device_cpu_per_gb(f.source), f.device_cpu_per_gb(f.destination)),
      f.source.peak_rss_bytes, f.destination.peak_rss_bytes);
  if (with_extra) {
    absl::StrAppend(&j, absl::StrFormat(",\"downtime_seconds\":%.6f,\"data_path\":\"%s\","
                                        "\"security\":\"%s\",\"integrity\":\"%s\","
                                        "\"verified\":%s",
                                        f.downtime, f.data_path, f.security, f.integrity,
                                        f.verified ? "true" : "false"));
  }
  return "{" + j + "}";
}

// --thread_cpu: threads that used at least 1 ms, busiest first.
std::vector<std::pair<std::string, double>> BusyThreads(const std::map<std::string, double>& t,
                                                        uint64_t bytes) {
  std::vector<std::pair<std::string, double>> v;
  for (const auto& [name, seconds] : t) {
    if (seconds >= 0.001 && bytes > 0) v.emplace_back(name, seconds / (bytes / 1e9));
  }
  std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  return v;
}
std::string ThreadsLine(const std::map<std::string, double>& t, uint64_t bytes) {
  std::string out;
  for (const auto& [name, per_gb] : BusyThreads(t, bytes)) {
    absl::StrAppend(&out, out.empty() ? "" : ", ", name, " ", absl::StrFormat("%.3f", per_gb));
  }
  return out;
}
std::string ThreadsJson(const std::map<std::string, double>& t, uint64_t bytes) {
  std::string out;
  for (const auto& [name, per_gb] : BusyThreads(t, bytes)) {
    absl::StrAppend(&out, out.empty() ? "" : ",", "\"", absl::CEscape(name), "\":",
                    absl::StrFormat("%.4f", per_gb));
  }
  return "{" + out + "}";
}

template <typename T>
T Median(std::vector<T> v) {
  std::sort(v.begin(), v.end(),
            [](const T& a, const T& b) { return a.throughput() < b.throughput(); });
  return v[v.size() / 2];
}

struct BaselineFigures {
  BaselineResult r;
  double throughput() const { return r.seconds > 0 ? r.bytes / r.seconds : 0; }
};

// A run inside this process: its time is the STOP_COPY downtime (no PRE_COPY bytes counted).
Figures FiguresOf(const InProcessResult& r) {
  Figures g;
  g.bytes = r.bytes;
  g.seconds = g.downtime = r.downtime_seconds;
  g.source = r.source;
  g.destination = r.destination;
  g.data_path = r.data_path;
  g.verified = r.verified;
  return g;
}

int Main() {
  ::signal(SIGPIPE, SIG_IGN);
  const std::string transport = absl::GetFlag(FLAGS_transport);
  if (transport != "tcp" && transport != "dpdk") {
    std::cerr << "migmover-bench: --transport=" << transport << ": expected tcp or dpdk\n";
    return 2;
  }
  if (transport == "dpdk" && absl::GetFlag(FLAGS_streams) != 1) {
    std::cerr << "migmover-bench: --transport=dpdk moves each device on one link; --streams "
                 "must be 1\n";
    return 2;
  }
  if (!absl::GetFlag(FLAGS_tcp_congestion).empty()) {
    if (absl::Status s = net::CheckCongestionControl(absl::GetFlag(FLAGS_tcp_congestion));
        !s.ok()) {
      std::cerr << "migmover-bench: --tcp_congestion: " << s.message() << "\n";
      return 2;
    }
  }
  if (absl::GetFlag(FLAGS_device) != "image" && absl::GetFlag(FLAGS_device) != "checked") {
    std::cerr << "migmover-bench: --device must be image or checked\n";
    return 2;
  }
  if (absl::GetFlag(FLAGS_streams) < 1 || absl::GetFlag(FLAGS_streams) > 16) {
    std::cerr << "migmover-bench: --streams must be 1..16\n";
    return 2;
  }
  auto size = sim::ParseByteSize(absl::GetFlag(FLAGS_device_size));
  auto chunk = sim::ParseByteSize(absl::GetFlag(FLAGS_chunk_size));
  if (!size.ok() || !chunk.ok()) {
    std::cerr << "migmover-bench: " << (size.ok() ? chunk.status() : size.status()) << "\n";
    return 2;
  }
  std::vector<sim::SimDeviceSpec> specs;
  for (int i = 0; i < absl::GetFlag(FLAGS_devices); ++i) {
    sim::SimDeviceSpec spec;
    spec.state_size = *size;
    spec.seed = 100 + i;
    spec.content = absl::GetFlag(FLAGS_device) == "image" ? sim::SimDeviceSpec::Content::kImage
                                                          : sim::SimDeviceSpec::Content::kChecked;
    specs.push_back(spec);
  }
  const int sessions = absl::GetFlag(FLAGS_sessions);
  if (sessions < 1 || sessions > 64 ||
      (sessions > 1 && (absl::GetFlag(FLAGS_inprocess) ||
                        absl::GetFlag(FLAGS_vmm_write_size) != "0"))) {
    std::cerr << "migmover-bench: --sessions must be 1..64, and 1 with --inprocess or "
                 "--vmm_write_size\n";
    return 2;
  }
  // The baseline: one raw pair per stream of every session's devices, each moving its share.
  std::vector<sim::SimDeviceSpec> baseline_specs;
  const int streams = absl::GetFlag(FLAGS_streams);
  for (int n = 0; n < sessions * static_cast<int>(specs.size()); ++n) {
    const sim::SimDeviceSpec& spec = specs[n % specs.size()];
    for (int k = 0; k < streams; ++k) {
      sim::SimDeviceSpec share = spec;
      share.state_size = spec.state_size / streams;
      share.seed = spec.seed * 100 + k + 10000 * (n / specs.size());
      baseline_specs.push_back(share);
    }
  }
  VmmMode vmm;
  {
    auto ws = sim::ParseByteSize(absl::GetFlag(FLAGS_vmm_write_size));
    auto ch = ParseVmmChannel(absl::GetFlag(FLAGS_vmm_channel));
    if (!ws.ok() || !ch.ok() || *ws > (64u << 20)) {
      std::cerr << "migmover-bench: --vmm_write_size (0 or 1 B .. 64 MiB) / --vmm_channel: "
                << (!ws.ok() ? ws.status() : ch.status()) << "\n";
      return 2;
    }
    vmm.write_size = *ws;
    vmm.channel = *ch;
    auto rate = sim::ParseByteSize(absl::GetFlag(FLAGS_vmm_rate));
    if (!rate.ok()) {
      std::cerr << "migmover-bench: --vmm_rate: " << rate.status() << "\n";
      return 2;
    }
    vmm.rate = *rate;
    if (vmm.write_size != 0 && (absl::GetFlag(FLAGS_baseline) || absl::GetFlag(FLAGS_inprocess) ||
                                transport != "tcp")) {
      std::cerr << "migmover-bench: --vmm_write_size compares with a direct connection of its "
                   "own; it runs between daemons over tcp, without --baseline or --inprocess\n";
      return 2;
    }
  }
  // --sessions > 1: every session's devices, for one session that migrates them all.
  std::vector<sim::SimDeviceSpec> all_specs;
  for (int k = 0; k < sessions; ++k) {
    for (sim::SimDeviceSpec spec : specs) {
      spec.seed += 1000 * k;
      all_specs.push_back(spec);
    }
  }
  std::vector<DirectFigures> direct;
  std::vector<Figures> ours, one_session;
  std::vector<BaselineFigures> base;
  // The raw loop doing migmover's integrity work too (a keyed Poly1305 per side): over TCP,
  // where migmover's streams carry the keyed digest.
  std::vector<BaselineFigures> base_digest;
  const bool raw_digest = absl::GetFlag(FLAGS_baseline) && transport == "tcp";
  std::vector<Iperf3Figures> iperf3_runs;
  std::string iperf3_error;
  double memcpy_rate = 0, aead_rate = 0, mac_rate = 0;
  if (absl::GetFlag(FLAGS_baseline)) {
    memcpy_rate = MeasureMemcpy();
    aead_rate = MeasureAes128Gcm();
    mac_rate = MeasureStreamMac();
  }
  for (int run = 0; run < std::max(1, absl::GetFlag(FLAGS_repeat)); ++run) {
    if (vmm.write_size != 0) {
      auto d = RunDirectVmmStreams(static_cast<int>(specs.size()), *size, vmm.write_size,
                                   vmm.channel, vmm.rate);
      if (!d.ok()) {
        std::cerr << "migmover-bench: direct VMM streams: " << d.status() << "\n";
        return 1;
      }
      direct.push_back(*d);
    }
    if (absl::GetFlag(FLAGS_baseline)) {
      auto b = RunRawTcpBaseline(baseline_specs, *chunk, absl::GetFlag(FLAGS_tcp_congestion));
      if (!b.ok()) {
        std::cerr << "migmover-bench: baseline: " << b.status() << "\n";
        return 1;
      }
      base.push_back({*b});
      if (raw_digest) {
        auto bd = RunRawTcpBaseline(baseline_specs, *chunk, absl::GetFlag(FLAGS_tcp_congestion),
                                    /*digest=*/true);
        if (!bd.ok() || !bd->verified) {
          std::cerr << "migmover-bench: baseline with the digest: "
                    << (bd.ok() ? absl::DataLossError("the two ends' tags differ") : bd.status())
                    << "\n";
          return 1;
        }
        base_digest.push_back({*bd});
      }
      if (iperf3_error.empty()) {
        // One iperf3 stream per migmover stream, moving the same bytes.
        auto ip = RunIperf3(*size * specs.size() * sessions,
                            streams * static_cast<int>(specs.size()) * sessions,
                            absl::GetFlag(FLAGS_tcp_congestion));
        if (ip.ok()) {
          iperf3_runs.push_back(*ip);
        } else {
          iperf3_error = std::string(ip.status().message());
          std::cerr << "migmover-bench: iperf3: " << iperf3_error
                    << " (no limit figures in this run)\n";
        }
      }
    }
    absl::StatusOr<Figures> f;
    if (transport == "dpdk" && absl::GetFlag(FLAGS_inprocess)) {
      const std::string frames = absl::GetFlag(FLAGS_dpdk_frames);
      if (frames != "sealed" && frames != "digest") {
        std::cerr << "migmover-bench: --dpdk_frames must be sealed or digest\n";
        return 2;
      }
      auto r = RunDpdkLinkInProcess(specs, static_cast<uint32_t>(*chunk), frames == "sealed");
      f = r.ok() ? absl::StatusOr<Figures>(FiguresOf(*r)) : r.status();
    } else if (absl::GetFlag(FLAGS_inprocess)) {
      stream::StreamOptions so;
      auto dp = stream::ParseDataPath(absl::GetFlag(FLAGS_data_path));
      auto bw = sim::ParseByteSize(absl::GetFlag(FLAGS_bandwidth));
      if (!dp.ok() || !bw.ok()) {
        std::cerr << "migmover-bench: bad --data_path or --bandwidth\n";
        return 2;
      }
      so.data_path = *dp;
      so.chunk_size = static_cast<uint32_t>(*chunk);
      so.send_zc = absl::GetFlag(FLAGS_send_zc);
      so.tcp_congestion = absl::GetFlag(FLAGS_tcp_congestion);
      auto r =
          RunInProcess(specs, so, absl::GetFlag(FLAGS_streams), *bw, absl::GetFlag(FLAGS_precopy),
                       static_cast<uint32_t>(std::max(0, absl::GetFlag(FLAGS_workers))));
      f = r.ok() ? absl::StatusOr<Figures>(FiguresOf(*r)) : r.status();
    } else {
      f = RunOurs(specs, run, vmm, sessions);
      if (f.ok() && sessions > 1) {
        // The same devices (the same seeds) in one session, right after: what one session
        // delivers on this machine at this moment.
        auto one = RunOurs(all_specs, run + 1000, vmm, 1);
        if (!one.ok()) {
          std::cerr << "migmover-bench: one session: " << one.status() << "\n";
          return 1;
        }
        one_session.push_back(*one);
      }
    }
    if (!f.ok()) {
      std::cerr << "migmover-bench: " << f.status() << "\n";
      return 1;
    }
    ours.push_back(*f);
  }
  Figures m = Median(ours);
  const bool have_base = !base.empty();
  BaselineFigures b = have_base ? Median(base) : BaselineFigures{};
  Figures bf;
  bf.bytes = b.r.bytes;
  bf.seconds = b.r.seconds;
  bf.source = b.r.source;
  bf.destination = b.r.destination;
  const bool have_base_digest = !base_digest.empty();
  Figures bdf;
  if (have_base_digest) {
    BaselineFigures bd = Median(base_digest);
    bdf.bytes = bd.r.bytes;
    bdf.seconds = bd.r.seconds;
    bdf.source = bd.r.source;
    bdf.destination = bd.r.destination;
  }
  const bool have_iperf3 = !iperf3_runs.empty();
  Iperf3Figures ip = have_iperf3 ? Median(iperf3_runs) : Iperf3Figures{};
  const bool tls = transport == "tcp" && absl::GetFlag(FLAGS_peer_security) == "tls";
  Limit limit, with_digest;
  // The copy path's keyed digest (plaintext and TLS peers over TCP; DPDK seals its frames).
  const bool digest = m.integrity.find("keyed digest") != std::string::npos;
  if (have_iperf3) {
    limit = ModelledLimit(ip, memcpy_rate, tls ? aead_rate : 0);
    with_digest = ModelledLimit(ip, memcpy_rate, tls ? aead_rate : 0, digest ? mac_rate : 0);
  }
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const double on_cores = CoresLimit(
      with_digest, m.device_cpu_per_gb(m.source) + m.device_cpu_per_gb(m.destination), cores);
  const std::string model = absl::StrCat("iperf3 + one copy per side",
                                         tls ? " + one AES-128-GCM pass per side" : "");
  auto throughputs = [](const auto& v) {
    std::string out;
    for (const auto& x : v) absl::StrAppend(&out, out.empty() ? "" : ",", absl::StrFormat("%.1f", x.throughput()));
    return "[" + out + "]";
  };
  auto ratio = [](double a, double b) { return b > 0 ? a / b : 0.0; };

  if (absl::GetFlag(FLAGS_json)) {
    std::string j = FiguresJson(m, true);
    j.pop_back();
    absl::StrAppend(
        &j, absl::StrFormat(",\"sessions\":%d,\"device\":\"%s\",\"devices\":%d,\"device_size_bytes\":%d,"
                            "\"streams\":%d,\"chunk_size\":%d,\"transport\":\"%s\",\"runs\":%d,"
                            "\"throughput_runs\":%s",
                            sessions, absl::GetFlag(FLAGS_device), absl::GetFlag(FLAGS_devices),
                            *size,
                            absl::GetFlag(FLAGS_streams), *chunk, transport,
                            static_cast<int>(ours.size()), throughputs(ours)));
    if (!direct.empty()) {
      DirectFigures dm = Median(direct);
      absl::StrAppend(
          &j, absl::StrFormat(",\"vmm_write_size\":%d,\"vmm_channel\":\"%s\","
                              "\"vmm_rate_bytes_per_s\":%d,\"vmm_cpu_seconds_per_gb\":%.4f,"
                              "\"direct\":{\"throughput_bytes_per_s\":%.1f,\"bytes\":%d,"
                              "\"seconds\":%.6f,\"vmm_cpu_seconds_per_gb\":%.4f,"
                              "\"throughput_runs\":%s},\"ratio\":{\"throughput_vs_direct\":%.4f}",
                              vmm.write_size, absl::GetFlag(FLAGS_vmm_channel), vmm.rate,
                              m.bytes ? m.vmm_cpu_seconds / (m.bytes / 1e9) : 0.0,
                              dm.throughput(), dm.bytes, dm.seconds,
                              dm.bytes ? dm.vmm_cpu_seconds / (dm.bytes / 1e9) : 0.0,
                              throughputs(direct), ratio(m.throughput(), dm.throughput())));
    }
    if (!one_session.empty()) {
      Figures om = Median(one_session);
      std::string one = FiguresJson(om, true);
      one.pop_back();
      absl::StrAppend(&j, ",\"one_session\":", one, ",\"throughput_runs\":",
                      throughputs(one_session), "}",
                      absl::StrFormat(",\"throughput_vs_one_session\":%.4f",
                                      ratio(m.throughput(), om.throughput())));
    }
    if (have_base) {
      std::string raw = FiguresJson(bf, false);
      raw.pop_back();
      absl::StrAppend(&j, ",\"baseline\":", raw, ",\"throughput_runs\":", throughputs(base), "}");
      if (have_base_digest) {
        std::string rd = FiguresJson(bdf, false);
        rd.pop_back();
        absl::StrAppend(&j, ",\"baseline_with_digest\":", rd, ",\"throughput_runs\":",
                        throughputs(base_digest), "}");
      }
      absl::StrAppend(
          &j,
          absl::StrFormat(
              ",\"ratio\":{\"throughput\":%.4f,\"cpu_seconds_per_gb\":%s,"
              "\"mover_cpu_seconds_per_gb\":%s,\"peak_rss_bytes\":%s",
              ratio(m.throughput(), bf.throughput()),
              Side(ratio(m.cpu_per_gb(m.source), bf.cpu_per_gb(bf.source)),
                   ratio(m.cpu_per_gb(m.destination), bf.cpu_per_gb(bf.destination))),
              Side(ratio(m.mover_cpu_per_gb(m.source), bf.mover_cpu_per_gb(bf.source)),
                   ratio(m.mover_cpu_per_gb(m.destination), bf.mover_cpu_per_gb(bf.destination))),
              Side(ratio(m.source.peak_rss_bytes, bf.source.peak_rss_bytes),
                   ratio(m.destination.peak_rss_bytes, bf.destination.peak_rss_bytes))));
      if (have_iperf3) {
        absl::StrAppend(
            &j, absl::StrFormat(
                    ",\"throughput_vs_iperf3\":%.4f,\"throughput_vs_limit\":%.4f,"
                    "\"throughput_vs_limit_with_integrity\":%.4f,"
                    "\"throughput_vs_limit_on_cores\":%.4f,"
                    "\"mover_cpu_seconds_per_gb_vs_limit\":%s",
                    ratio(m.throughput(), ip.throughput()), ratio(m.throughput(), limit.throughput),
                    ratio(m.throughput(), with_digest.throughput), ratio(m.throughput(), on_cores),
                    Side(ratio(m.mover_cpu_per_gb(m.source), limit.source_cpu_seconds_per_gb),
                         ratio(m.mover_cpu_per_gb(m.destination),
                               limit.destination_cpu_seconds_per_gb))));
      }
      if (have_base_digest) {
        absl::StrAppend(
            &j, absl::StrFormat(
                    ",\"throughput_vs_raw_with_digest\":%.4f,"
                    "\"mover_cpu_seconds_per_gb_vs_raw_with_digest\":%s",
                    ratio(m.throughput(), bdf.throughput()),
                    Side(ratio(m.mover_cpu_per_gb(m.source), bdf.mover_cpu_per_gb(bdf.source)),
                         ratio(m.mover_cpu_per_gb(m.destination),
                               bdf.mover_cpu_per_gb(bdf.destination)))));
      }
      absl::StrAppend(&j, "}");
      // The downtime target: STOP_COPY downtime against the time the baseline needs to move
      // the same bytes.
      absl::StrAppend(&j, absl::StrFormat(",\"downtime_over_baseline_transfer_seconds\":%.6f",
                                          m.downtime - m.bytes / bf.throughput()));
      if (have_base_digest) {
        absl::StrAppend(&j,
                        absl::StrFormat(",\"downtime_over_baseline_with_digest_seconds\":%.6f",
                                        m.downtime - m.bytes / bdf.throughput()));
      }
    }
    if (have_iperf3) {
      absl::StrAppend(
          &j, absl::StrFormat(",\"iperf3\":{\"throughput_bytes_per_s\":%.1f,\"bytes\":%d,"
                              "\"seconds\":%.6f,\"cpu_seconds_per_gb\":%s,\"throughput_runs\":%s}",
                              ip.throughput(), ip.bytes, ip.seconds,
                              Side(ip.sender_cpu_seconds_per_gb, ip.receiver_cpu_seconds_per_gb),
                              throughputs(iperf3_runs)));
      absl::StrAppend(
          &j, absl::StrFormat(",\"memcpy_bytes_per_s\":%.1f,\"aes_128_gcm_bytes_per_s\":%.1f,"
                              "\"poly1305_bytes_per_s\":%.1f,"
                              "\"limit\":{\"throughput_bytes_per_s\":%.1f,"
                              "\"cpu_seconds_per_gb\":%s,\"model\":\"%s\"},"
                              "\"limit_with_integrity\":{\"throughput_bytes_per_s\":%.1f,"
                              "\"cpu_seconds_per_gb\":%s,\"digest\":%s},"
                              "\"limit_on_cores\":{\"throughput_bytes_per_s\":%.1f,\"cores\":%d}",
                              memcpy_rate, aead_rate, mac_rate, limit.throughput,
                              Side(limit.source_cpu_seconds_per_gb,
                                   limit.destination_cpu_seconds_per_gb),
                              model, with_digest.throughput,
                              Side(with_digest.source_cpu_seconds_per_gb,
                                   with_digest.destination_cpu_seconds_per_gb),
                              digest ? "true" : "false", on_cores, cores));
    } else if (!iperf3_error.empty()) {
      absl::StrAppend(&j, ",\"iperf3_error\":\"", absl::CEscape(iperf3_error), "\"");
    }
    if (absl::GetFlag(FLAGS_thread_cpu)) {
      absl::StrAppend(&j, ",\"thread_cpu_seconds_per_gb\":{\"source\":",
                      ThreadsJson(m.source_threads, m.bytes), ",\"destination\":",
                      ThreadsJson(m.destination_threads, m.bytes), "}");
    }
    std::cout << j << "}\n";
    return m.verified ? 0 : 1;
  }
  std::cout << absl::StrFormat(
      "migmover-bench: %s%d %s device(s) x %s, %d stream(s), chunk %s, data path %s, %s, %d "
      "run(s)\n",
      sessions > 1 ? absl::StrCat(sessions, " sessions of ") : "",
      absl::GetFlag(FLAGS_devices), absl::GetFlag(FLAGS_device), Human(*size),
      absl::GetFlag(FLAGS_streams), Human(*chunk), m.data_path,
      transport != "dpdk"              ? absl::StrCat("tcp (congestion control ",
                                         absl::GetFlag(FLAGS_tcp_congestion).empty()
                                                          ? "system default"
                                                          : absl::GetFlag(FLAGS_tcp_congestion),
                                                      ")")
      : absl::GetFlag(FLAGS_inprocess) ? "dpdk (net_memif link streams in process)"
                                       : "dpdk (net_memif)",
      static_cast<int>(ours.size()));
  std::cout << absl::StrFormat("%-14s %12s %15s %15s %15s %10s %21s\n", "", "throughput",
                               "cpu s/GB src", "cpu s/GB dst", "device s/GB", "downtime",
                               "peak RSS src / dst");
  auto row = [](const char* name, const Figures& f, bool downtime) {
    std::cout << absl::StrFormat(
        "%-14s %10s/s %15.3f %15.3f %15s %10s %21s\n", name, Human(f.throughput()),
        f.mover_cpu_per_gb(f.source), f.mover_cpu_per_gb(f.destination),
        absl::StrFormat("%.3f / %.3f", f.device_cpu_per_gb(f.source),
                        f.device_cpu_per_gb(f.destination)),
        downtime ? absl::StrFormat("%.1f ms", f.downtime * 1000) : "-",
        absl::StrCat(Human(f.source.peak_rss_bytes), " / ", Human(f.destination.peak_rss_bytes)));
  };
  row("migmover", m, true);
  if (!one_session.empty()) row("one session", Median(one_session), true);
  if (!direct.empty()) {
    DirectFigures dm = Median(direct);
    std::cout << absl::StrFormat("%-14s %10s/s   (writer -> %s -> reader, %s pieces%s)\n",
                                 "direct", Human(dm.throughput()),
                                 absl::GetFlag(FLAGS_vmm_channel), Human(vmm.write_size),
                                 vmm.rate
                                     ? absl::StrCat(", writers paced at ", Human(vmm.rate), "/s")
                                     : "");
    std::cout << absl::StrFormat(
        "migmover / direct: throughput %.3f (the VMM streams' own CPU: %.3f s/GB through "
        "migmover, %.3f direct)\n",
        ratio(m.throughput(), dm.throughput()),
        m.bytes ? m.vmm_cpu_seconds / (m.bytes / 1e9) : 0.0,
        dm.bytes ? dm.vmm_cpu_seconds / (dm.bytes / 1e9) : 0.0);
  }
  if (have_base) row("raw loop", bf, false);
  if (have_base_digest) row("raw + digest", bdf, false);
  if (have_iperf3) {
    std::cout << absl::StrFormat("%-14s %10s/s %15.3f %15.3f\n", "iperf3", Human(ip.throughput()),
                                 ip.sender_cpu_seconds_per_gb, ip.receiver_cpu_seconds_per_gb);
    std::cout << absl::StrFormat("%-14s %10s/s %15.3f %15.3f   (%s; memcpy %s/s%s)\n", "limit",
                                 Human(limit.throughput), limit.source_cpu_seconds_per_gb,
                                 limit.destination_cpu_seconds_per_gb, model, Human(memcpy_rate),
                                 tls ? absl::StrCat(", AES-128-GCM ", Human(aead_rate), "/s") : "");
    if (digest) {
      std::cout << absl::StrFormat(
          "%-14s %10s/s %15.3f %15.3f   (+ the keyed Poly1305 digest per side, %s/s)\n",
          "+ integrity", Human(with_digest.throughput), with_digest.source_cpu_seconds_per_gb,
          with_digest.destination_cpu_seconds_per_gb, Human(mac_rate));
    }
    std::cout << absl::StrFormat(
        "%-14s %10s/s   (%d cores for both sides%s and the devices' %.3f s/GB)\n",
        absl::StrCat("on ", cores, " cores"), Human(on_cores), cores,
        digest ? " with integrity" : "",
        m.device_cpu_per_gb(m.source) + m.device_cpu_per_gb(m.destination));
  } else if (!iperf3_error.empty()) {
    std::cout << "iperf3: " << iperf3_error << "\n";
  }
  std::cout << "(cpu s/GB: the mover's own threads; device s/GB: the simulated device's, source / "
               "destination)\n";
  if (!one_session.empty()) {
    Figures om = Median(one_session);
    std::cout << absl::StrFormat(
        "%d sessions / one session of the same %d devices: throughput %.3f, mover CPU per GB "
        "%.3f src, %.3f dst\n",
        sessions, static_cast<int>(all_specs.size()), ratio(m.throughput(), om.throughput()),
        ratio(m.mover_cpu_per_gb(m.source), om.mover_cpu_per_gb(om.source)),
        ratio(m.mover_cpu_per_gb(m.destination), om.mover_cpu_per_gb(om.destination)));
  }
  if (have_base) {
    std::cout << absl::StrFormat(
        "migmover / raw loop: throughput %.3f, mover CPU per GB %.3f src, %.3f dst, peak RSS "
        "%.2f src, %.2f dst\n",
        ratio(m.throughput(), bf.throughput()),
        ratio(m.mover_cpu_per_gb(m.source), bf.mover_cpu_per_gb(bf.source)),
        ratio(m.mover_cpu_per_gb(m.destination), bf.mover_cpu_per_gb(bf.destination)),
        ratio(m.source.peak_rss_bytes, bf.source.peak_rss_bytes),
        ratio(m.destination.peak_rss_bytes, bf.destination.peak_rss_bytes));
  }
  if (have_base_digest) {
    std::cout << absl::StrFormat(
        "migmover / raw loop with the digest: throughput %.3f, mover CPU per GB %.3f src, %.3f "
        "dst\n",
        ratio(m.throughput(), bdf.throughput()),
        ratio(m.mover_cpu_per_gb(m.source), bdf.mover_cpu_per_gb(bdf.source)),
        ratio(m.mover_cpu_per_gb(m.destination), bdf.mover_cpu_per_gb(bdf.destination)));
  }
  if (have_iperf3) {
    std::cout << absl::StrFormat(
        "migmover / iperf3: throughput %.3f;  migmover / limit: throughput %.3f (%.3f with "
        "integrity, %.3f on these cores), mover CPU per GB %.3f src, %.3f dst\n",
        ratio(m.throughput(), ip.throughput()), ratio(m.throughput(), limit.throughput),
        ratio(m.throughput(), with_digest.throughput), ratio(m.throughput(), on_cores),
        ratio(m.mover_cpu_per_gb(m.source), limit.source_cpu_seconds_per_gb),
        ratio(m.mover_cpu_per_gb(m.destination), limit.destination_cpu_seconds_per_gb));
  }
  if (have_base) {
    std::cout << absl::StrFormat(
        "downtime %.1f ms = raw loop's transfer time for the same bytes (%.1f ms) %+.1f ms\n",
        m.downtime * 1000, m.bytes / bf.throughput() * 1000,
        (m.downtime - m.bytes / bf.throughput()) * 1000);
    if (have_base_digest) {
      std::cout << absl::StrFormat(
          "downtime %.1f ms = raw loop with the digest's transfer time (%.1f ms) %+.1f ms\n",
          m.downtime * 1000, m.bytes / bdf.throughput() * 1000,
          (m.downtime - m.bytes / bdf.throughput()) * 1000);
    }
  }
  if (absl::GetFlag(FLAGS_thread_cpu)) {
    std::cout << "cpu s/GB by thread, source:      " << ThreadsLine(m.source_threads, m.bytes)
              << "\ncpu s/GB by thread, destination: "
              << ThreadsLine(m.destination_threads, m.bytes) << "\n";
  }
  std::cout << "peers: " << (m.security.empty() ? "-" : m.security) << "; every byte checked by "
            << (m.integrity.empty() ? "-" : m.integrity) << "\n";
  std::cout << "destination verified: " << (m.verified ? "yes" : "NO") << "\n";
  return m.verified ? 0 : 1;
}

}  // namespace
}  // namespace migmover::bench

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "end-to-end benchmark: migrates simulated devices between two real migmoverd processes on "
      "this machine and reports GB/s, CPU seconds per GB on each side, STOP_COPY downtime and "
      "peak RSS; --baseline also measures raw TCP pairs moving the same bytes and prints ratios.");
  absl::ParseCommandLine(argc, argv);
  if (!absl::GetFlag(FLAGS_vmm_role).empty()) {
    return migmover::bench::RunVmmRole(absl::GetFlag(FLAGS_vmm_role),
                                       absl::GetFlag(FLAGS_vmm_child_bytes),
                                       absl::GetFlag(FLAGS_vmm_child_io_size),
                                       absl::GetFlag(FLAGS_vmm_child_rate));
  }
  migmover::SetMinLogSeverity(migmover::LogSeverity::kWarning);  // In-process sessions log.
  return migmover::bench::Main();
}
