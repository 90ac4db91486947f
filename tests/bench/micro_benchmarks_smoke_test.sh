#!/usr/bin/env bash
# The micro-benchmarks build and run: every benchmark once, briefly, and each reports a figure.
# (It checks they work, not how fast: bench/README.md has the figures.)
set -euo pipefail
dir="${TEST_SRCDIR}/migmover"
out="${TEST_TMPDIR:-/tmp}/micro.json"
for b in bench/micro/hot_paths_benchmark bench/tls/tls_stream_benchmark; do
  "$dir/$b" --benchmark_min_time=0.01 --benchmark_format=json >"$out"
  python3 - "$b" "$out" <<'PY'
import json, sys
name, path = sys.argv[1], sys.argv[2]
runs = json.load(open(path))["benchmarks"]
assert runs, f"{name}: no benchmark ran"
ran = 0
for r in runs:
    if r.get("error_occurred"):
        # A benchmark of a kernel feature this machine lacks (kernel TLS) says so and is skipped.
        assert "this kernel has no" in r.get("error_message", ""), f"{name}: {r['name']}: {r}"
        print(f"skipped: {name}: {r['name']}: {r['error_message']}")
        continue
    assert r["real_time"] > 0 and r["iterations"] > 0, f"{name}: {r['name']} measured nothing"
    ran += 1
assert ran > 0, f"{name}: nothing ran"
print(f"ok: {name}: {ran} benchmarks")
PY
done
echo "micro-benchmarks smoke test: all ran"
