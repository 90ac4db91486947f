#!/usr/bin/env bash
# deploy/examples/python_agent/agent.py against two real migmoverd processes on loopback (peer
# TLS with throw-away certificates, as deploy/demo.sh): a data-fd migration with PRE_COPY, over
# pipes (two devices, pauses longer than the session's idle timeout between PRE_COPY pieces) and
# over socket pairs; each must exit 0 and report PRE_COPY bytes, switchover readiness and a
# byte-exact result. Then a migration that must fail (a peer address nothing listens on) must
# exit 1 and name the failure, and leave both daemons serving.
# Skips (the reason printed, and a JUnit "skipped" in the XML, as GTEST_SKIP would) when
# /usr/bin/python3 cannot import grpc: ./deploy/install-deps.sh installs python3-grpcio.
set -uo pipefail

dir="${TEST_SRCDIR:?run under bazel test}/migmover"
MIGMOVERD="$dir/daemon/server/migmoverd"
AGENT="$dir/deploy/examples/python_agent/agent.py"
PROTO="$dir/api/migmover.proto"
# Debian's interpreter: a python3 earlier on PATH (pyenv) may not see Debian's packages.
PY=/usr/bin/python3

skip() {
  echo "SKIP: $1"
  if [[ -n "${XML_OUTPUT_FILE:-}" ]]; then
    cat >"$XML_OUTPUT_FILE" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="1" failures="0" errors="0" skipped="1">
  <testsuite name="python_agent_test" tests="1" failures="0" errors="0" skipped="1">
    <testcase name="python_agent_test" status="notrun"><skipped message="$1"/></testcase>
  </testsuite>
</testsuites>
EOF
  fi
  exit 0
}
[[ -x "$PY" ]] || skip "no $PY"
"$PY" -c 'import grpc, google.protobuf' 2>/dev/null ||
  skip "$PY cannot import grpc and protobuf (Debian: python3-grpcio python3-protobuf)"
for tool in protoc grpc_python_plugin; do
  command -v "$tool" >/dev/null || skip "no $tool (Debian: protobuf-compiler, protobuf-compiler-grpc)"
done

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# Socket paths must stay under 108 bytes: a short private directory in /tmp, not TEST_TMPDIR.
RUN=$(mktemp -d /tmp/mmpy.XXXXXX) || fail "mktemp"
# The daemons' logs go with the test's outputs (deploy/test.sh scans them for sanitizer reports).
LOGS="${TEST_UNDECLARED_OUTPUTS_DIR:-$RUN}"
pids=()
cleanup() {
  local rc=$?
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  if ((rc != 0)); then
    for f in "$LOGS"/source.log "$LOGS"/destination.log; do
      [[ -f "$f" ]] && { echo "---- $(basename "$f") (last 40 lines) ----"; tail -n 40 "$f"; }
    done
  fi
  rm -rf "$RUN"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM  # bazel's timeout: the EXIT trap still stops the daemons

# Throw-away TLS credentials: a CA and a certificate per daemon (as deploy/demo.sh).
if command -v openssl >/dev/null; then
  make_cert() {  # name
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" \
      -keyout "$RUN/$1.key" -out "$RUN/$1.csr" 2>/dev/null &&
      printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$1" \
        >"$RUN/$1.ext" &&
      openssl x509 -req -in "$RUN/$1.csr" -CA "$RUN/ca.pem" -CAkey "$RUN/ca.key" \
        -CAcreateserial -days 1 -extfile "$RUN/$1.ext" -out "$RUN/$1.pem" 2>/dev/null
  }
  if ! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
      -subj "/CN=migmover test CA" -keyout "$RUN/ca.key" -out "$RUN/ca.pem" 2>/dev/null ||
    ! make_cert source || ! make_cert destination; then
    fail "openssl could not make certificates"
  fi
else
  echo "note: no openssl tool: the daemons run with --plaintext_peers"
fi
tls_flags() {  # name peer-name
  if [[ -f "$RUN/ca.pem" ]]; then
    echo "--tls_ca=$RUN/ca.pem --tls_cert=$RUN/$1.pem --tls_key=$RUN/$1.key --tls_peer_names=$2"
  else
    echo "--plaintext_peers"
  fi
}

start_daemon() {  # name peer-name
  # shellcheck disable=SC2046  # tls_flags' words are separate flags
  "$MIGMOVERD" --name="$1" --grpc_socket="$RUN/$1.sock" --fd_socket="$RUN/$1-fd.sock" \
    --peer_listen=127.0.0.1:0 --port_file="$RUN/$1.port" $(tls_flags "$1" "$2") \
    >"$LOGS/$1.log" 2>&1 &
  pids+=($!)
}
start_daemon source destination
start_daemon destination source

# Ready when each has written its peer port (after its sockets exist); bounded, and a daemon
# that exits at start-up fails at once.
ready=0
for _ in $(seq 1 600); do  # 60 s: a sanitizer build on two busy cores starts slowly
  if [[ -s "$RUN/source.port" && -s "$RUN/destination.port" && -S "$RUN/source.sock" &&
        -S "$RUN/destination.sock" && -S "$RUN/source-fd.sock" && -S "$RUN/destination-fd.sock" ]]; then
    ready=1
    break
  fi
  for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null || fail "a daemon exited at start-up"; done
  sleep 0.1
done
((ready)) || fail "the daemons did not become ready within 60 s"
PEER="127.0.0.1:$(cat "$RUN/destination.port")"
echo "daemons ready: source and destination, peer streams on $PEER"

agent() {  # output-file flags...: runs the agent against both daemons; its exit code
  local out=$1
  shift
  "$PY" "$AGENT" --proto="$PROTO" --src_socket="$RUN/source.sock" \
    --src_fd_socket="$RUN/source-fd.sock" --dst_socket="$RUN/destination.sock" \
    --dst_fd_socket="$RUN/destination-fd.sock" "$@" 2>&1 | tee "$out"
  return "${PIPESTATUS[0]}"
}
# The summary line's key=value pairs a migration that succeeded must show.
check_summary() {  # output-file
  local s
  s=$(grep -E '^summary: ' "$1") || fail "no summary line in the agent's output"
  grep -qE '(^| )result=PASS( |$)' <<<"$s" || fail "summary without result=PASS: $s"
  grep -qE ' precopy_bytes=[1-9][0-9]*( |$)' <<<"$s" || fail "no PRE_COPY bytes: $s"
  grep -qE ' stop_copy_bytes=[1-9][0-9]*( |$)' <<<"$s" || fail "no STOP_COPY bytes: $s"
  grep -qE ' switchover_ready_seen=true( |$)' <<<"$s" || fail "switchover readiness not seen: $s"
  grep -qE ' destination_verified=true( |$)' <<<"$s" || fail "destination not verified: $s"
  grep -qE ' byte_exact=true( |$)' <<<"$s" || fail "not byte-exact: $s"
}

echo "== 1: two devices over pipes; PRE_COPY in 3 pieces, pauses longer than the idle timeout"
agent "$RUN/agent1.out" --session_id=pipes --devices=2 --size=3MiB --pieces=3 --pause_ms=2500 \
  --idle_timeout_ms=2000 --channel=pipe --seed=1
rc=$?
((rc == 0)) || fail "the agent exited $rc over pipes"
check_summary "$RUN/agent1.out"

echo "== 2: one device over a unix socket pair (its writer ends with shutdown)"
agent "$RUN/agent2.out" --session_id=sockets --devices=1 --size=2MiB --pieces=2 --pause_ms=300 \
  --channel=socketpair --seed=2
rc=$?
((rc == 0)) || fail "the agent exited $rc over socket pairs"
check_summary "$RUN/agent2.out"

echo "== 3: a peer address nothing listens on: the agent must fail, exit 1 and say why"
agent "$RUN/agent3.out" --session_id=nopeer --devices=1 --size=1MiB --pieces=2 --pause_ms=100 \
  --peer=127.0.0.1:1 --timeout_s=30
rc=$?
((rc == 1)) || fail "the agent exited $rc against a dead peer, want 1"
grep -q '^agent: FAILED: ' "$RUN/agent3.out" || fail "no FAILED line for the dead peer"
grep -q 'UNAVAILABLE' "$RUN/agent3.out" || fail "the failure does not name UNAVAILABLE"
grep -q '^summary: ' "$RUN/agent3.out" && fail "a summary line for a failed migration"
for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null || fail "a daemon died"; done

echo "PASS: the Python example agent migrated byte-exact over pipes and socket pairs, and failed cleanly"
