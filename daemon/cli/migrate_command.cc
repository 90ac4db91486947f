#include "daemon/cli/migrate_command.h"

#include <unistd.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "daemon/cli/ctl_client.h"
#include "daemon/device/sim/sim_device_spec.h"
#include "grpcpp/grpcpp.h"

namespace migmover {
namespace {

using v1::SessionStatus;

bool Final(const SessionStatus& s) {
  return s.phase() == SessionStatus::SUCCEEDED || s.phase() == SessionStatus::FAILED ||
         s.phase() == SessionStatus::CANCELLED;
}

// The destination's spec: the source's size, chunk and features unless given.
std::string DefaultDstSpec(const std::string& src_spec) {
  std::vector<std::string> keep;
  for (absl::string_view kv : absl::StrSplit(src_spec, ',', absl::SkipWhitespace())) {
    if (absl::StartsWith(kv, "size=") || absl::StartsWith(kv, "features=")) {
      keep.emplace_back(kv);
    }
  }
  return absl::StrJoin(keep, ",");
}

struct Agent {
  std::string name;
  std::unique_ptr<v1::Migmover::Stub> stub;
};

absl::StatusOr<SessionStatus> Get(Agent& a, const std::string& id) {
  grpc::ClientContext ctx;
  v1::GetSessionRequest req;
  req.set_session_id(id);
  SessionStatus s;
  absl::Status st = ctl::FromGrpc(a.stub->GetSession(&ctx, req, &s), "GetSession", a.name);
  if (!st.ok()) return st;
  return s;
}

}  // namespace

int RunMigrateCommand(const MigrateOptions& o, std::ostream& out, std::ostream& err) {
  if (o.src_socket.empty() || o.dst_socket.empty() || o.peer.empty()) {
    err << "migrate: --src_socket, --dst_socket and --peer are required\n";
    return 2;
  }
  if (o.devices < 1 || o.devices > 256) {
    err << "migrate: --devices must be 1..256\n";
    return 2;
  }
  auto src_spec = sim::ParseSimDeviceSpec(o.src_spec);
  if (!src_spec.ok()) {
    err << "migrate: --src_spec: " << src_spec.status().message() << "\n";
    return 2;
  }
  const std::string dst_spec_text = o.dst_spec.empty() ? DefaultDstSpec(o.src_spec) : o.dst_spec;
  const std::string id = o.session_id.empty()
                             ? absl::StrCat("demo-", getpid(), "-", absl::ToUnixMillis(absl::Now()))
                             : o.session_id;
  Agent src{"source daemon (" + o.src_socket + ")", ctl::Connect(o.src_socket)};
  Agent dst{"destination daemon (" + o.dst_socket + ")", ctl::Connect(o.dst_socket)};
  auto fail = [&](const absl::Status& s) {
    err << "migrate: " << s << "\n";
    return 1;
  };

  std::vector<std::string> names;
  for (int i = 0; i < o.devices; ++i) {
    std::string name = absl::StrCat(id.substr(0, 40), ".dev", i);
    names.push_back(name);
    for (Agent* a : {&src, &dst}) {
      grpc::ClientContext ctx;
      v1::AttachDeviceRequest req;
      req.set_name(name);
      std::string spec = a == &src ? absl::StrCat(o.src_spec, ",seed=", 1000 + i) : dst_spec_text;
      req.set_simulated(spec);
      v1::Device d;
      absl::Status s = ctl::FromGrpc(a->stub->AttachDevice(&ctx, req, &d), "AttachDevice", a->name);
      if (!s.ok()) return fail(s);
      out << "attached " << name << " on " << (a == &src ? "source" : "destination") << ": "
          << d.description() << ", state " << d.state() << "\n";
    }
  }

  v1::TransferOptions topts;
  topts.set_data_path(o.data_path);
  topts.set_chunk_size(o.chunk_size);
  topts.set_streams(o.streams);
  topts.set_transport(o.transport);
  {
    grpc::ClientContext ctx;
    v1::PrepareDestinationRequest req;
    req.set_session_id(id);
    for (const auto& n : names) req.add_devices(n);
    req.set_final_state("RUNNING");
    *req.mutable_options() = topts;
    SessionStatus s;
    absl::Status st =
        ctl::FromGrpc(dst.stub->PrepareDestination(&ctx, req, &s), "PrepareDestination", dst.name);
    if (!st.ok()) return fail(st);
    out << "destination prepared: devices in RESUMING, waiting for the source\n";
  }
  const absl::Time start = absl::Now();
  {
    grpc::ClientContext ctx;
    v1::StartSourceRequest req;
    req.set_session_id(id);
    for (const auto& n : names) req.add_devices(n);
    req.set_peer(o.peer);
    req.set_precopy(o.precopy);
    req.set_bandwidth_bytes_per_second(o.bandwidth);
    *req.mutable_options() = topts;
    SessionStatus s;
    absl::Status st = ctl::FromGrpc(src.stub->StartSource(&ctx, req, &s), "StartSource", src.name);
    if (!st.ok()) return fail(st);
    out << "source started: session " << id << " -> " << o.peer << "\n";
  }

  const absl::Time deadline = start + absl::Seconds(o.timeout_seconds);
  const bool wants_precopy = o.precopy && src_spec->features.pre_copy();
  SessionStatus s;
  // Like a hypervisor: let PRE_COPY run until the device has sent its initial data (and the
  // requested number of dirty rounds), then stop the vCPUs and switch over.
  absl::Time last_print = absl::InfinitePast();
  while (true) {
    auto got = Get(src, id);
    if (!got.ok()) return fail(got.status());
    s = *got;
    if (Final(s)) break;
    if (s.phase() >= SessionStatus::PRE_COPY &&
        (!wants_precopy || static_cast<int>(s.precopy_rounds()) >= o.min_precopy_rounds)) {
      break;
    }
    if (absl::Now() - last_print > absl::Seconds(1)) {
      out << "  " << ctl::StatusLine(s) << "\n";
      last_print = absl::Now();
    }
    if (absl::Now() > deadline) return fail(absl::DeadlineExceededError("PRE_COPY took too long"));
    absl::SleepFor(absl::Milliseconds(20));
  }
  if (!Final(s)) {
    out << "  " << ctl::StatusLine(s) << "\n";
    out << "switchover: vCPUs stopped (simulated), precopy rounds " << s.precopy_rounds()
        << ", pending " << ctl::HumanBytes(s.pending_bytes()) << "\n";
    grpc::ClientContext ctx;
    v1::SwitchoverRequest req;
    req.set_session_id(id);
    SessionStatus ignored;
    absl::Status st =
        ctl::FromGrpc(src.stub->Switchover(&ctx, req, &ignored), "Switchover", src.name);
    if (!st.ok()) return fail(st);
  }
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::milliseconds(static_cast<int64_t>(o.timeout_seconds * 1000)));
    v1::WatchSessionRequest req;
    req.set_session_id(id);
    auto reader = src.stub->WatchSession(&ctx, req);
    SessionStatus w;
    last_print = absl::InfinitePast();
    while (reader->Read(&w)) {
      s = w;
      if (absl::Now() - last_print > absl::Seconds(1) || Final(w)) {
        out << "  " << ctl::StatusLine(w) << "\n";
        last_print = absl::Now();
      }
    }
    absl::Status st = ctl::FromGrpc(reader->Finish(), "WatchSession", src.name);
    if (!st.ok()) return fail(st);
  }
  const absl::Time end = absl::Now();
  // The destination finishes its last commit before it answers COMMIT; give its status a moment.
  SessionStatus d;
  for (int i = 0; i < 100; ++i) {
    auto got = Get(dst, id);
    if (!got.ok()) return fail(got.status());
    d = *got;
    if (Final(d)) break;
    absl::SleepFor(absl::Milliseconds(50));
  }

  const double seconds = absl::ToDoubleSeconds(end - start);
  const bool ok = s.phase() == SessionStatus::SUCCEEDED && d.phase() == SessionStatus::SUCCEEDED &&
                  d.verified();
  out << "\n=== migration " << id << ": "
      << (ok ? "SUCCEEDED" : SessionStatus::Phase_Name(s.phase())) << " ===\n";
  out << absl::StrFormat("devices:            %d x %s\n", o.devices, o.src_spec);
  out << absl::StrFormat(
      "bytes moved:        %s (%d bytes; precopy %s in %d round(s), "
      "stop-copy %s)\n",
      ctl::HumanBytes(s.bytes_moved()), s.bytes_moved(), ctl::HumanBytes(s.precopy_bytes()),
      s.precopy_rounds(), ctl::HumanBytes(s.stop_copy_bytes()));
  out << absl::StrFormat("throughput:         %s/s (bytes moved / %.3f s from start to commit)\n",
                         ctl::HumanBytes(s.bytes_moved() / std::max(seconds, 1e-9)), seconds);
  out << absl::StrFormat("STOP_COPY downtime: %.1f ms (switchover to commit acknowledged)\n",
                         s.stop_copy_seconds() * 1000);
  for (int i = 0; i < d.devices_size(); ++i) {
    const auto& dev = d.devices(i);
    const auto& sdev = i < s.devices_size() ? s.devices(i) : v1::DeviceProgress();
    out << absl::StrFormat(
        "device %s: source %s via %s, destination %s via %s over %s, %s, %s%s\n", dev.name(),
        sdev.state(), sdev.data_path().empty() ? "-" : sdev.data_path(), dev.state(),
        dev.data_path(), dev.transport().empty() ? "-" : dev.transport(),
        dev.committed() ? "committed" : "NOT committed",
        !dev.committed()       ? "stream rejected"
        : dev.digest_checked() ? "stream digest verified by migmover and the device"
                               : "stream verified by the device (spliced: no userspace digest)",
        dev.error().empty() ? "" : absl::StrCat(", error: ", dev.error()));
  }
  out << "destination verified: "
      << (d.verified() ? "yes (every device's driver checked the stream it received and "
                         "RESUMING -> STOP succeeded)"
                       : "NO")
      << "\n";
  if (!s.error().empty()) out << "source error: " << s.error() << "\n";
  if (!d.error().empty()) out << "destination error: " << d.error() << "\n";
  if (o.json) {
    out << absl::StrFormat(
        "{\"session\":\"%s\",\"succeeded\":%s,\"bytes_moved\":%d,\"precopy_bytes\":%d,"
        "\"stop_copy_bytes\":%d,\"precopy_rounds\":%d,\"seconds\":%.6f,"
        "\"throughput_bytes_per_s\":%.1f,\"downtime_seconds\":%.6f,\"verified\":%s}\n",
        id, ok ? "true" : "false", s.bytes_moved(), s.precopy_bytes(), s.stop_copy_bytes(),
        s.precopy_rounds(), seconds, s.bytes_moved() / std::max(seconds, 1e-9),
        s.stop_copy_seconds(), d.verified() ? "true" : "false");
  }
  // Leave the daemons as we found them.
  for (Agent* a : {&src, &dst}) {
    for (const auto& n : names) {
      grpc::ClientContext ctx;
      v1::DetachDeviceRequest req;
      req.set_name(n);
      v1::Device ignored;
      (void)a->stub->DetachDevice(&ctx, req, &ignored);
    }
  }
  return ok ? 0 : 1;
}

}  // namespace migmover
