#!/usr/bin/env bash
# migmover-bench runs in both modes and prints the JSON keys scripts rely on. (It checks the tool
# works, not how fast: speed is for bench/README.md, measured as ratios.)
set -euo pipefail
dir="${TEST_SRCDIR}/migmover"
bench="$dir/bench/e2e/migmover-bench"
check='
import json, sys
d = json.load(sys.stdin)
for k in ["throughput_bytes_per_s", "cpu_seconds_per_gb", "downtime_seconds", "peak_rss_bytes",
          "data_path", "verified"]:
    assert k in d, k
for side in ["source", "destination"]:
    assert d["cpu_seconds_per_gb"][side] >= 0 and d["peak_rss_bytes"][side] > 0, side
assert d["verified"] is True and d["throughput_bytes_per_s"] > 0
for k in ["mover_cpu_seconds_per_gb", "device_cpu_seconds_per_gb"]:
    for side in ["source", "destination"]:
        assert d[k][side] >= 0, (k, side)
if "--baseline" in sys.argv:
    assert d["baseline"]["throughput_bytes_per_s"] > 0
    assert d["ratio"]["throughput"] > 0
    assert "downtime_over_baseline_transfer_seconds" in d
if "--raw_digest" in sys.argv:
    # The raw loop doing the same integrity work (a keyed Poly1305 per side), its tags compared.
    assert d["baseline_with_digest"]["throughput_bytes_per_s"] > 0
    assert d["baseline_with_digest"]["mover_cpu_seconds_per_gb"]["destination"] > 0
    assert d["ratio"]["throughput_vs_raw_with_digest"] > 0
    assert d["ratio"]["mover_cpu_seconds_per_gb_vs_raw_with_digest"]["source"] > 0
if "--threads" in sys.argv:
    # CPU by thread name: the pump workers and the simulated devices threads are named.
    t = d["thread_cpu_seconds_per_gb"]
    assert t["source"].get("mm-pump-worker", 0) > 0, t
    assert t["source"].get("mm-sim-save", 0) > 0, t
if "--limit" in sys.argv and "iperf3_error" in d:
    print("limit checks skipped:", d["iperf3_error"])
elif "--limit" in sys.argv:
    # The limit of this machine, measured in the same run: iperf3, memcpy, AES-GCM and the model.
    assert d["iperf3"]["throughput_bytes_per_s"] > 0 and d["iperf3"]["bytes"] > 0
    assert d["iperf3"]["cpu_seconds_per_gb"]["source"] > 0
    assert d["memcpy_bytes_per_s"] > 0 and d["aes_128_gcm_bytes_per_s"] > 0
    lim = d["limit"]
    # One copy per side (and under TLS an AEAD pass) on top of iperf3: always below it.
    assert 0 < lim["throughput_bytes_per_s"] < d["iperf3"]["throughput_bytes_per_s"], lim
    assert lim["cpu_seconds_per_gb"]["destination"] > d["iperf3"]["cpu_seconds_per_gb"]["destination"]
    assert "copy" in lim["model"]
    for k in ["throughput_vs_iperf3", "throughput_vs_limit"]:
        assert d["ratio"][k] > 0, k
    assert len(d["throughput_runs"]) == d["runs"]
if "--sessions" in sys.argv:
    assert d["sessions"] == 3 and d["bytes"] > 3 * 8 * 2**20, d["bytes"]
if "--vmm" in sys.argv:
    # A VMM stream in data-fd mode against the same writer and reader connected directly; the
    # readers got exactly what the writers wrote (verified covers it).
    assert d["direct"]["throughput_bytes_per_s"] > 0 and d["direct"]["bytes"] == d["bytes"]
    assert d["ratio"]["throughput_vs_direct"] > 0
    assert d["vmm_write_size"] == 32768 and d["vmm_cpu_seconds_per_gb"] > 0
print("ok:", d["data_path"], round(d["throughput_bytes_per_s"] / 1e9, 2), "GB/s")
'
"$bench" --migmoverd="$dir/daemon/server/migmoverd" --device_size=32MiB --data_path=copy \
  --baseline --repeat=2 --thread_cpu --json | python3 -c "$check" --baseline --limit \
  --raw_digest --threads
# The tests' self-checking device stays available.
"$bench" --migmoverd="$dir/daemon/server/migmoverd" --device=checked --device_size=16MiB \
  --json | python3 -c "$check"
"$bench" --migmoverd="$dir/daemon/server/migmoverd" --device_size=16MiB --streams=2 --devices=2 \
  --json | python3 -c "$check"
"$bench" --inprocess --device_size=16MiB --data_path=splice --json | python3 -c "$check"
# Several migrations at once between the same daemons: every one verified, all bytes counted.
"$bench" --migmoverd="$dir/daemon/server/migmoverd" --sessions=3 --device_size=8MiB --json |
  python3 -c "$check" --sessions
# A VMM's own stream (writer and reader processes, 32 KiB pieces) through the daemons in data-fd
# mode, against a direct connection, over a socket pair and over pipes.
"$bench" --migmoverd="$dir/daemon/server/migmoverd" --vmm_write_size=32KiB --device_size=16MiB \
  --json | python3 -c "$check" --vmm
"$bench" --migmoverd="$dir/daemon/server/migmoverd" --vmm_write_size=32KiB --vmm_channel=pipe \
  --devices=2 --device_size=8MiB --json | python3 -c "$check" --vmm
# The DPDK transport: two daemons with a net_memif port each, against the TCP baseline; and the
# in-process link streams.
"$bench" --migmoverd="$dir/daemon/server/migmoverd" --transport=dpdk --devices=2 \
  --device_size=16MiB --baseline --json 2>/dev/null | python3 -c "$check" --baseline
"$bench" --inprocess --transport=dpdk --device_size=16MiB --json 2>/dev/null |
  python3 -c "$check"
# Bad flags are refused with a clear message.
err="${TEST_TMPDIR:-/tmp}/bench-err"
if "$bench" --transport=rdma 2>"$err"; then exit 1; fi
grep -q "expected tcp or dpdk" "$err"
if "$bench" --transport=dpdk --streams=2 2>"$err"; then exit 1; fi
grep -q "streams must be 1" "$err"
if "$bench" --vmm_write_size=32KiB --baseline 2>"$err"; then exit 1; fi
grep -q "compares with a direct connection" "$err"
if "$bench" --device=fast 2>"$err"; then exit 1; fi
grep -q "device must be image or checked" "$err"
echo "migmover-bench smoke test: all modes ok"
