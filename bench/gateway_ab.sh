#!/usr/bin/env bash
# Interleaved A/B of two gateway builds behind the same nginx backend: requests/s, p99 and the
# gateway's own CPU per request (from /proc), alternating which build goes first.
#
# usage: bench/gateway_ab.sh OLD_BINARY NEW_BINARY      (PAIRS=6 D=5 by default)
#   e.g. git stash; cargo build --release; cp target/release/scalewise /tmp/old; git stash pop; ...
# needs: nginx (apt: nginx-light), wrk.
set -euo pipefail
A=$1; B=$2; PAIRS=${PAIRS:-6}; D=${D:-5}
TMP=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
BACKEND=$(free_port); PA_PORT=$(free_port); PB_PORT=$(free_port)
cat >"$TMP/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $TMP/nginx.pid;
error_log $TMP/error.log crit;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000000;
  server { listen 127.0.0.1:$BACKEND; location / { return 200 "hello world\n"; } }
}
CONF
/usr/sbin/nginx -c "$TMP/nginx.conf" -p "$TMP" & NG=$!
"$A" gateway --listen 127.0.0.1:$PA_PORT --backend 127.0.0.1:$BACKEND --workers 1 --admin off >/dev/null 2>&1 & PA=$!
"$B" gateway --listen 127.0.0.1:$PB_PORT --backend 127.0.0.1:$BACKEND --workers 1 --admin off >/dev/null 2>&1 & PB=$!
trap 'kill $PA $PB $NG 2>/dev/null; rm -rf "$TMP"' EXIT
for _ in $(seq 50); do
  curl -sf -o /dev/null http://127.0.0.1:$PA_PORT/ && curl -sf -o /dev/null http://127.0.0.1:$PB_PORT/ && break
  sleep 0.1
done
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run() {
  local pid=$1 port=$2 name=$3 t0 t1 n
  t0=$(ticks "$pid")
  wrk -t1 -c64 -d"${D}s" --latency "http://127.0.0.1:$port/" >"$TMP/wrk.txt"
  t1=$(ticks "$pid")
  n=$(awk '/requests in/ {print $1}' "$TMP/wrk.txt")
  awk -v n="$n" -v d=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v nm="$name" \
    -v r="$(awk '/Requests\/sec/ {print $2}' "$TMP/wrk.txt")" -v p="$(awk '$1=="99%" {print $2}' "$TMP/wrk.txt")" \
    'BEGIN {printf "%-4s req/s %9.0f  p99 %8s  cpu/req %.2f µs\n", nm, r, p, d / hz * 1e6 / n}'
}
for i in $(seq "$PAIRS"); do
  if [ $((i % 2)) = 1 ]; then run $PA $PA_PORT A; run $PB $PB_PORT B; else run $PB $PB_PORT B; run $PA $PA_PORT A; fi
done
