#include "bench/e2e/machine_limits.h"

#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "bench/e2e/child_process.h"
#include "transport/net/socket.h"
#include "transport/peer/stream_auth.h"

namespace migmover::bench {
namespace {

// A free loopback port (bound and released; iperf3 binds it again at once).
absl::StatusOr<uint16_t> FreePort() {
  uint16_t port = 0;
  auto l = net::TcpListen({"127.0.0.1", 0}, &port);
  if (!l.ok()) return l.status();
  return port;
}

// iperf3's JSON is not strict (with -P it repeats a key in "start"), so the few figures the
// bench needs are picked out of the objects only its "end" section has: the object after
// `"key":`, braces balanced (iperf3 puts no braces in strings there).
std::optional<std::string> ObjectAfter(absl::string_view text, absl::string_view key) {
  const size_t at = text.find(absl::StrCat("\"", key, "\":"));
  if (at == absl::string_view::npos) return std::nullopt;
  const size_t open = text.find('{', at);
  if (open == absl::string_view::npos) return std::nullopt;
  int depth = 0;
  for (size_t i = open; i < text.size(); ++i) {
    if (text[i] == '{') ++depth;
    if (text[i] == '}' && --depth == 0) return std::string(text.substr(open, i - open + 1));
  }
  return std::nullopt;
}

// A number member of a flat object; 0 when absent.
double Number(absl::string_view object, absl::string_view key) {
  const size_t at = object.find(absl::StrCat("\"", key, "\":"));
  if (at == absl::string_view::npos) return 0;
  size_t i = at + key.size() + 3;
  while (i < object.size() && (object[i] == ' ' || object[i] == '\t')) ++i;
  size_t j = i;
  while (j < object.size() && (absl::ascii_isdigit(object[j]) || object[j] == '.' ||
                               object[j] == '-' || object[j] == '+' || object[j] == 'e' ||
                               object[j] == 'E')) {
    ++j;
  }
  double v = 0;
  return absl::SimpleAtod(object.substr(i, j - i), &v) ? v : 0;
}

}  // namespace

absl::StatusOr<Iperf3Figures> RunIperf3(uint64_t bytes, int streams,
                                        const std::string& congestion) {
  absl::Status last;
  for (int attempt = 0; attempt < 3; ++attempt) {  // Another process may take the free port.
    auto port = FreePort();
    if (!port.ok()) return port.status();
    const std::string p = absl::StrCat(*port);
    auto server = ChildProcess::Spawn(
        // -i 0: no interval reports, so its output stays small while nobody reads it.
        "iperf3", {"iperf3", "-s", "-1", "-i", "0", "-B", "127.0.0.1", "-p", p, "--forceflush"});
    if (!server.ok()) return server.status();
    if (!(*server)->AwaitOutput("Server listening", absl::Seconds(10))) {
      last = absl::InternalError(
          absl::StrCat("iperf3 server did not start: ", (*server)->output()));
      continue;
    }
    std::vector<std::string> argv = {"iperf3", "-c", "127.0.0.1", "-p", p, "-i", "0",
                                     "-n",     absl::StrCat(bytes),
                                     "-P",     absl::StrCat(streams), "-J"};
    if (!congestion.empty()) {
      argv.push_back("-C");
      argv.push_back(congestion);
    }
    auto client = ChildProcess::Spawn("iperf3", argv);
    if (!client.ok()) return client.status();
    const int code = (*client)->Wait();
    const std::string& out = (*client)->output();
    auto received = ObjectAfter(out, "sum_received");
    auto sent = ObjectAfter(out, "sum_sent");
    auto cpu = ObjectAfter(out, "cpu_utilization_percent");
    if (!received || !sent || !cpu || code != 0) {
      last = absl::InternalError(absl::StrCat("iperf3 ", absl::StrJoin(argv, " "), " exited ",
                                              code, ": ", (*client)->output().substr(0, 400)));
      continue;
    }
    Iperf3Figures f;
    f.bytes = static_cast<uint64_t>(Number(*received, "bytes"));
    f.seconds = Number(*received, "seconds");
    const double sent_seconds = Number(*sent, "seconds");
    const double gb = f.bytes / 1e9;
    if (f.bytes == 0 || f.seconds <= 0 || gb <= 0) {
      last = absl::InternalError("iperf3 reported no bytes received");
      continue;
    }
    // CPU utilisation is a percentage of one core over each side's own test time.
    f.sender_cpu_seconds_per_gb = Number(*cpu, "host_total") / 100 * sent_seconds / gb;
    f.receiver_cpu_seconds_per_gb = Number(*cpu, "remote_total") / 100 * f.seconds / gb;
    (*server)->Wait();
    return f;
  }
  return last;
}

double MeasureMemcpy() {
  constexpr size_t kBytes = 256u << 20;
  std::vector<uint8_t> a(kBytes, 1), b(kBytes, 2);  // Touched: no page faults while timed.
  double best = 0;
  for (int pass = 0; pass < 4; ++pass) {
    const absl::Time t0 = absl::Now();
    std::memcpy(pass % 2 ? a.data() : b.data(), pass % 2 ? b.data() : a.data(), kBytes);
    const double s = absl::ToDoubleSeconds(absl::Now() - t0);
    if (s > 0) best = std::max(best, kBytes / s);
  }
  // Keep the copies observable.
  volatile uint8_t sink = a[kBytes / 2] + b[kBytes / 3];
  (void)sink;
  return best;
}

double MeasureAes128Gcm() {
  constexpr size_t kRecord = 16u << 10;
  constexpr size_t kTotal = 256u << 20;
  std::vector<uint8_t> in(kRecord, 7), out(kRecord + 16);
  uint8_t key[16] = {1}, iv[12] = {2}, tag[16];
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  if (ctx == nullptr) return 0;
  absl::Cleanup free_ctx = [ctx] { EVP_CIPHER_CTX_free(ctx); };
  if (EVP_EncryptInit_ex(ctx, EVP_aes_128_gcm(), nullptr, key, iv) != 1) return 0;
  double best = 0;
  for (int pass = 0; pass < 3; ++pass) {
    const absl::Time t0 = absl::Now();
    for (size_t done = 0; done < kTotal; done += kRecord) {
      int n = 0;
      iv[0]++;
      if (EVP_EncryptInit_ex(ctx, nullptr, nullptr, nullptr, iv) != 1 ||
          EVP_EncryptUpdate(ctx, out.data(), &n, in.data(), kRecord) != 1 ||
          EVP_EncryptFinal_ex(ctx, out.data() + n, &n) != 1 ||
          EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, sizeof(tag), tag) != 1) {
        return 0;
      }
    }
    const double s = absl::ToDoubleSeconds(absl::Now() - t0);
    if (s > 0) best = std::max(best, kTotal / s);
  }
  return best;
}

double MeasureStreamMac() {
  constexpr size_t kFrame = 256u << 10;
  constexpr size_t kTotal = 256u << 20;
  std::vector<uint8_t> frame(kFrame, 0x5a);
  peer::StreamKey key;
  key.bytes.fill(7);
  double best = 0;
  for (int pass = 0; pass < 3; ++pass) {
    auto mac = peer::StreamMac::Create(key);
    if (!mac.ok()) return 0;
    const absl::Time t0 = absl::Now();
    for (size_t done = 0; done < kTotal; done += kFrame) (*mac)->Update(frame.data(), kFrame);
    const bool ok = (*mac)->Finish().has_value();
    const double s = absl::ToDoubleSeconds(absl::Now() - t0);
    if (ok && s > 0) best = std::max(best, kTotal / s);
  }
  return best;
}

double CoresLimit(const Limit& limit, double device_cpu_seconds_per_gb, int cores) {
  const double per_gb = limit.source_cpu_seconds_per_gb + limit.destination_cpu_seconds_per_gb +
                        device_cpu_seconds_per_gb;
  return per_gb > 0 ? cores / per_gb * 1e9 : 0;
}

Limit ModelledLimit(const Iperf3Figures& iperf3, double memcpy_bytes_per_s,
                    double aead_bytes_per_s, double mac_bytes_per_s) {
  Limit l;
  if (iperf3.throughput() <= 0 || memcpy_bytes_per_s <= 0) return l;
  // Seconds per byte each side adds to iperf3's: one copy, and one AEAD pass under TLS.
  double extra = 1 / memcpy_bytes_per_s;
  if (aead_bytes_per_s > 0) extra += 1 / aead_bytes_per_s;
  if (mac_bytes_per_s > 0) extra += 1 / mac_bytes_per_s;
  l.throughput = 1 / (1 / iperf3.throughput() + extra);
  l.source_cpu_seconds_per_gb = iperf3.sender_cpu_seconds_per_gb + extra * 1e9;
  l.destination_cpu_seconds_per_gb = iperf3.receiver_cpu_seconds_per_gb + extra * 1e9;
  return l;
}

}  // namespace migmover::bench
