#include "transport/stream/data_path_probe.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "transport/base/status_macros.h"
#include "transport/net/socket.h"
#include "transport/stream/stream_sender.h"
#include "absl/strings/str_cat.h"
#include "transport/peer/stream_auth.h"
#include "transport/stream/stream_protection.h"

namespace migmover::stream {
namespace {

absl::StatusOr<double> Trial(DataPath path, uint64_t bytes, uint32_t chunk,
                             io::IoEngine engine) {
  uint16_t port = 0;
  ASSIGN_OR_RETURN(UniqueFd listener, net::TcpListen({"127.0.0.1", 0}, &port));
  ASSIGN_OR_RETURN(UniqueFd out, net::TcpConnect({"127.0.0.1", port}, absl::Seconds(5)));
  ASSIGN_OR_RETURN(UniqueFd in, net::Accept(listener.get(), absl::Seconds(5)));
  ASSIGN_OR_RETURN(PipeFds pipe, MakePipe());
  ::fcntl(pipe.write.get(), F_SETPIPE_SZ, 1 << 20);
  StreamOptions options;
  options.data_path = path;
  options.chunk_size = chunk;
  options.io_engine = engine;
  // A probe must never hold up the daemon's start for long.
  options.idle_timeout = absl::Seconds(2);
  ASSIGN_OR_RETURN(std::unique_ptr<StreamSender> sender,
                   StreamSender::Create(nullptr, std::move(out), 0, options));
  // As a stream under TLS: either path may run (a sender without TLS keeps to copy), and the
  // copy path pays its keyed digest as real streams do.
  StreamProtection protection;
  ASSIGN_OR_RETURN(protection.keys,
                   peer::DeriveStreamKeys(peer::SessionSecretBytes{}, peer::HelloNonce{},
                                          "data path probe", 0));
  protection.aead = true;
  RETURN_IF_ERROR(sender->Protect(protection));

  std::thread drain([fd = in.get()] {
    std::vector<char> buf(1 << 20);
    while (::recv(fd, buf.data(), buf.size(), 0) > 0) {
    }
  });
  std::thread feed([&pipe, bytes] {
    std::vector<char> buf(1 << 20, 'm');
    uint64_t left = bytes;
    while (left > 0) {
      ssize_t n = ::write(pipe.write.get(), buf.data(), std::min<uint64_t>(left, buf.size()));
      if (n <= 0) break;
      left -= n;
    }
    pipe.write.Reset();
  });
  std::atomic<bool> never{false};
  const absl::Time start = absl::Now();
  absl::StatusOr<PumpResult> r =
      sender->Pump(pipe.read.get(), wire::Phase::kStopCopy, UINT64_MAX, never, never);
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  pipe.read
      .Reset();  // If the pump stopped early, the feeder's next write fails instead of blocking.
  feed.join();
  const DataPath used = sender->data_path_used();
  sender.reset();  // Closes the connection: the drain sees EOF.
  drain.join();
  RETURN_IF_ERROR(r.status());
  if (r->bytes != bytes) return absl::InternalError("data path probe moved the wrong count");
  // A trial that ran the other path would make the comparison a coin toss.
  if (used != path) {
    return absl::InternalError(absl::StrCat("data path probe: the ", DataPathName(path),
                                            " trial ran ", DataPathName(used)));
  }
  return bytes / std::max(seconds, 1e-9);
}

}  // namespace

DataPath ChooseDataPath(double copy_bytes_per_second, double splice_bytes_per_second,
                        double margin) {
  return splice_bytes_per_second >= copy_bytes_per_second * (1 + margin) &&
                 splice_bytes_per_second > 0
             ? DataPath::kSplice
             : DataPath::kCopy;
}

absl::StatusOr<DataPathProbe> ProbeDataPaths(uint64_t bytes, int rounds, uint32_t chunk,
                                             io::IoEngine engine) {
  std::vector<double> copy, splice;
  for (int i = 0; i < std::max(1, rounds); ++i) {
    // Alternate so a burst of load on the machine hits both paths alike.
    ASSIGN_OR_RETURN(double c, Trial(DataPath::kCopy, bytes, chunk, engine));
    ASSIGN_OR_RETURN(double s, Trial(DataPath::kSplice, bytes, chunk, engine));
    copy.push_back(c);
    splice.push_back(s);
  }
  std::sort(copy.begin(), copy.end());
  std::sort(splice.begin(), splice.end());
  DataPathProbe p;
  p.copy_bytes_per_second = copy[copy.size() / 2];
  p.splice_bytes_per_second = splice[splice.size() / 2];
  p.splice_advantage = p.splice_bytes_per_second / std::max(p.copy_bytes_per_second, 1.0) - 1;
  p.faster = ChooseDataPath(p.copy_bytes_per_second, p.splice_bytes_per_second);
  return p;
}

}  // namespace migmover::stream
