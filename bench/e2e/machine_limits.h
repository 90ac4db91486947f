// What this machine allows a mover, measured in the same run as the mover itself (machines here
// are shared and noisy, so figures are compared as ratios):
//  - iperf3 (Debian's), one stream per mover stream over loopback: the network stack's own cost;
//  - memcpy of buffers larger than the last-level cache: the cost of one copy;
//  - AES-128-GCM (TLS 1.3's TLS_AES_128_GCM_SHA256 record cipher, OpenSSL): a TLS byte's cost;
//  - the modelled limit: what a mover must at least spend per byte. A mover's source must read
//    each byte out of the device's data fd (one copy) before it does iperf3's sender work, and its
//    destination must write each byte into the device's data fd (one copy) after iperf3's
//    receiver work; under TLS each side also seals or opens each byte once. The sides run in
//    parallel, so the limit's time per byte is iperf3's plus one copy (plus one AEAD pass), and
//    each side's CPU per GB is iperf3's side's plus the same;
//  - the same limit with the integrity rule: the copy path's keyed Poly1305 digest reads every
//    byte once more on each side (api/PEER_PROTOCOL.md), measured here too;
//  - the limit on these cores: the machine's cores divided by everything a migration must
//    spend per byte on it, both sides' (iperf3's work, a copy and the digest, under TLS the
//    AEAD) and the device's own threads' as measured in the same run. On two cores shared by
//    both daemons and both simulated devices, this is the one that binds.
#ifndef MIGMOVER_BENCH_E2E_MACHINE_LIMITS_H_
#define MIGMOVER_BENCH_E2E_MACHINE_LIMITS_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace migmover::bench {

struct Iperf3Figures {
  uint64_t bytes = 0;
  double seconds = 0;                  // iperf3's own measurement, receiver side.
  double sender_cpu_seconds_per_gb = 0;
  double receiver_cpu_seconds_per_gb = 0;
  double throughput() const { return seconds > 0 ? bytes / seconds : 0; }
};

// Runs `iperf3 -s -1` and `iperf3 -c 127.0.0.1 -n bytes -P streams -J` (with -C `congestion`
// when set). Errors: NotFound when iperf3 is not installed (Debian: apt-get install iperf3);
// Internal naming what iperf3 printed when it fails.
absl::StatusOr<Iperf3Figures> RunIperf3(uint64_t bytes, int streams, const std::string& congestion);

// Bytes per second one thread copies with memcpy, between two 256 MiB buffers (larger than the
// cache, so each copy reads and writes memory, as a data fd's copy does); best of a few passes.
double MeasureMemcpy();

// Bytes per second one thread seals with AES-128-GCM in 16 KiB records (TLS's record size).
double MeasureAes128Gcm();

// Bytes per second one thread digests with the copy path's keyed Poly1305 (peer::StreamMac), in
// 256 KiB frames (the daemon's default frame, in cache as it is after the frame's copy).
double MeasureStreamMac();

struct Limit {
  double throughput = 0;                    // Bytes per second.
  double source_cpu_seconds_per_gb = 0;     // What the mover's source must at least spend.
  double destination_cpu_seconds_per_gb = 0;
};

// The modelled limit (the file comment says how); `aead_bytes_per_s` 0 for plaintext peers,
// `mac_bytes_per_s` 0 to leave the integrity digest out.
Limit ModelledLimit(const Iperf3Figures& iperf3, double memcpy_bytes_per_s,
                    double aead_bytes_per_s, double mac_bytes_per_s = 0);

// The limit on `cores` cores: `limit`'s CPU per GB on both sides plus the devices' own.
double CoresLimit(const Limit& limit, double device_cpu_seconds_per_gb, int cores);

}  // namespace migmover::bench

#endif  // MIGMOVER_BENCH_E2E_MACHINE_LIMITS_H_
