#!/usr/bin/env bash
# Installs what is missing, builds, starts two migmoverd daemons on this machine and migrates a
# simulated 1 GiB device from one to the other through the gRPC API: PRE_COPY rounds while the
# device runs (and dirties state), switchover, STOP_COPY, commit. Prints what moved, how fast,
# the STOP_COPY downtime and whether the destination verified the stream. Exits 0 only if all of
# that happened.
#
#   ./deploy/demo.sh                      1 device of 1 GiB
#   DEVICES=4 SIZE=256MiB ./deploy/demo.sh
#   DATA_PATH=splice ./deploy/demo.sh     force a data path (default auto: the daemons measure splice
#                                         against copy at start-up and use the faster)
#   TRANSPORT=dpdk ./deploy/demo.sh       the device streams over DPDK (a net_memif port per daemon)
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICES=${DEVICES:-1}
SIZE=${SIZE:-1GiB}
DIRTY_RATE=${DIRTY_RATE:-64MiB}
DATA_PATH=${DATA_PATH:-auto}
TRANSPORT=${TRANSPORT:-tcp}

./deploy/install-deps.sh
echo "demo: building migmoverd and migmoverctl"
bazel build //daemon/server:migmoverd //daemon/cli:migmoverctl 2>&1 | tail -n 2
BIN=$(bazel info bazel-bin 2>/dev/null)
MIGMOVERD="$BIN/daemon/server/migmoverd"
MIGMOVERCTL="$BIN/daemon/cli/migmoverctl"

RUN=$(mktemp -d /tmp/migmover-demo.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# Throw-away credentials: a CA, and a certificate for each daemon, named after it. The daemons
# talk TLS 1.3 with mutual authentication and accept only each other (--tls_peer_names); a
# real deployment uses its own CA (deploy/SECURITY.md).
make_cert() {  # name
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" \
    -keyout "$RUN/$1.key" -out "$RUN/$1.csr" 2>/dev/null
  printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$1" >"$RUN/$1.ext"
  openssl x509 -req -in "$RUN/$1.csr" -CA "$RUN/ca.pem" -CAkey "$RUN/ca.key" -CAcreateserial \
    -days 1 -extfile "$RUN/$1.ext" -out "$RUN/$1.pem" 2>/dev/null
}
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj "/CN=migmover demo CA" -keyout "$RUN/ca.key" -out "$RUN/ca.pem" 2>/dev/null
make_cert source
make_cert destination
echo "demo: throw-away TLS credentials in $RUN (CA, and a certificate for each daemon)"

start_daemon() {  # name peer-name [more flags]
  "$MIGMOVERD" --name="$1" --grpc_socket="$RUN/$1.sock" --fd_socket="$RUN/$1-fd.sock" \
    --peer_listen=127.0.0.1:0 --port_file="$RUN/$1.port" --tls_ca="$RUN/ca.pem" \
    --tls_cert="$RUN/$1.pem" --tls_key="$RUN/$1.key" --tls_peer_names="$2" "${@:3}" \
    2>"$RUN/$1.log" &
  pids+=($!)
}
if [[ "$TRANSPORT" == dpdk ]]; then
  memif="migmover-demo-$$"
  start_daemon destination source --dpdk_port="net_memif0,role=server,socket=$memif"
  start_daemon source destination --dpdk_port="net_memif0,role=client,socket=$memif"
else
  start_daemon source destination
  start_daemon destination source
fi
for _ in $(seq 1 100); do
  [[ -s "$RUN/source.port" && -s "$RUN/destination.port" ]] && break
  sleep 0.1
done
if [[ ! -s "$RUN/destination.port" ]]; then
  echo "demo: the daemons did not start; logs:" >&2
  cat "$RUN"/*.log >&2
  exit 1
fi
PEER="127.0.0.1:$(cat "$RUN/destination.port")"
echo "demo: two daemons running (logs in $RUN): source and destination (peer streams on $PEER)"
echo

set +e
"$MIGMOVERCTL" migrate --src_socket="$RUN/source.sock" --dst_socket="$RUN/destination.sock" \
  --peer="$PEER" --devices="$DEVICES" --src_spec="size=$SIZE,dirty_rate=$DIRTY_RATE" \
  --data_path="$DATA_PATH" --transport="$TRANSPORT" --min_precopy_rounds=2 --timeout=300
rc=$?
set -e
echo
echo "demo: what the daemons logged:"
sed 's/^/  /' "$RUN/source.log" "$RUN/destination.log" | grep -v "fd intake:" | tail -n 30
if ((rc == 0)); then
  echo "demo: PASSED: the migration succeeded and every destination device committed its stream (above: what checked each stream's bytes)"
else
  echo "demo: FAILED (migmoverctl exit code $rc)" >&2
fi
exit "$rc"
