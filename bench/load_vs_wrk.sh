#!/usr/bin/env bash
# Side-by-side: `scalewise load` vs wrk (and oha when installed) against the same nginx target,
# 64 connections, one generator thread; then the generator's memory at 10,000 connections.
#
# Usage: bench/load_vs_wrk.sh            (DURATION=10 ROUNDS=3 CONNS=64 MEM_CONNS=10000 NGINX_WORKERS=1 by default)
#        NGINX_WORKERS=2 ...   a target with more capacity than one core, so the generator is the limit
#        DURATION=5 MEM_CONNS=0 bench/load_vs_wrk.sh   (shorter, skip the memory run)
# Needs: nginx (apt: nginx-light), wrk, python3, optionally oha (cargo install oha); builds scalewise in release mode if needed.
set -euo pipefail

DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
MEM_CONNS=${MEM_CONNS:-10000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${SCALEWISE:-$ROOT/target/release/scalewise}
NGINX=${NGINX:-/usr/sbin/nginx}

command -v wrk >/dev/null || { echo "wrk not installed (apt-get install wrk)"; exit 2; }
[ -x "$NGINX" ] || { echo "nginx not found at $NGINX (apt-get install nginx-light)"; exit 2; }
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release -p scalewise-cli)

# Many connections need many descriptors (both nginx and the generator inherit this).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

TMP=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$TMP/nginx.conf" <<CONF
worker_processes ${NGINX_WORKERS:-1};
worker_rlimit_nofile 65536;
daemon off;
pid $TMP/nginx.pid;
error_log $TMP/error.log crit;
events { worker_connections 30000; multi_accept on; }
http {
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 120s;
  server {
    listen 127.0.0.1:$PORT backlog=16384;
    location / { default_type text/plain; return 200 "hello, scalewise\n"; }
  }
}
CONF
"$NGINX" -c "$TMP/nginx.conf" -p "$TMP" &
NGINX_PID=$!
trap 'kill $NGINX_PID 2>/dev/null || true; rm -rf "$TMP"' EXIT
for _ in $(seq 50); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1',$PORT),0.2)" 2>/dev/null && break
  sleep 0.1
done
URL=http://127.0.0.1:$PORT/

ROUNDS=${ROUNDS:-3}
echo "machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), Linux $(uname -r), $(sysctl -n net.ipv4.tcp_congestion_control 2>/dev/null) congestion control"
echo "target: nginx (${NGINX_WORKERS:-1} worker(s)) at $URL; $CONNS connections, 1 generator thread, ${DURATION}s per run"
echo "$ROUNDS rounds, rotating which tool goes first; cpu = generator user+sys CPU per request;"
echo "target = nginx's CPU in cores and per request (1e6 / its µs per request is the most any generator can get from one nginx core);"
echo "idle = the machine's idle share (near 0: the machine, not one tool, is the limit)"
printf '%-6s %-10s %14s %12s %12s %8s %14s %6s\n' round tool "requests/s" "p99" "cpu µs/req" target "target µs/req" idle
TIMEFORMAT='%U %S'

# CPU ticks of nginx (all its processes) and the machine's (total, idle) from /proc.
nginx_ticks() { local t=0 p; for p in $NGINX_PID $(pgrep -P "$NGINX_PID"); do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
machine_ticks() { awk '/^cpu / {t = 0; for (i = 2; i <= NF; i++) t += $i; print t, $5 + $6}' /proc/stat; }
# Around each generator run: the target's CPU and the machine's idle share over the run.
snap_begin() { N0=$(nginx_ticks); read -r M0 I0 < <(machine_ticks); }
target_us() { awk -v t="$TARGET_SECS" -v n="$1" 'BEGIN {printf "%.2f", t * 1e6 / n}'; }
snap_end() {
  local n1 m1 i1
  n1=$(nginx_ticks); read -r m1 i1 < <(machine_ticks)
  TARGET_SECS=$(awk -v d="$((n1 - N0))" -v hz="$(getconf CLK_TCK)" 'BEGIN {print d / hz}')
  TARGET_CPU=$(awk -v t="$TARGET_SECS" -v s="$DURATION" 'BEGIN {printf "%.2f", t / s}')
  IDLE=$(awk -v i="$((i1 - I0))" -v t="$((m1 - M0))" 'BEGIN {printf "%.0f%%", 100 * i / t}')
}

run_wrk() {
  snap_begin
  { time wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$URL" >"$TMP/wrk.txt"; } 2>"$TMP/wrk.time"
  snap_end
  WRK_RPS=$(awk '/Requests\/sec/ {print $2}' "$TMP/wrk.txt")
  WRK_P99=$(awk '$1=="99%" {print $2}' "$TMP/wrk.txt")
  WRK_REQ=$(awk '/requests in/ {print $1}' "$TMP/wrk.txt")
  WRK_CPU=$(awk -v n="$WRK_REQ" '{printf "%.2f", ($1+$2)*1e6/n}' "$TMP/wrk.time")
  printf '%-6s %-10s %14s %12s %12s %8s %14s %6s\n' "$1" wrk "$WRK_RPS" "$WRK_P99" "$WRK_CPU" "$TARGET_CPU" "$(target_us "$WRK_REQ")" "$IDLE"
  echo "$WRK_RPS" >>"$TMP/wrk.all"
}
run_scalewise() {
  snap_begin
  { time "$BIN" load "$URL" -c "$CONNS" --threads 1 -d "${DURATION}s" --no-progress --quiet --json "$TMP/sw.json"; } 2>"$TMP/sw.time"
  snap_end
  read -r SW_RPS SW_P99 SW_REQ < <(python3 -c "import json; r=json.load(open('$TMP/sw.json')); print(f\"{r['rps']:.2f} {r['p99_ms']:.3f}ms {r['requests']}\")")
  SW_CPU=$(awk -v n="$SW_REQ" '{printf "%.2f", ($1+$2)*1e6/n}' "$TMP/sw.time")
  printf '%-6s %-10s %14s %12s %12s %8s %14s %6s\n' "$1" scalewise "$SW_RPS" "$SW_P99" "$SW_CPU" "$TARGET_CPU" "$(target_us "$SW_REQ")" "$IDLE"
  echo "$SW_RPS" >>"$TMP/sw.all"
}
run_oha() {
  snap_begin
  { time oha -z "${DURATION}s" -c "$CONNS" --no-tui --worker-threads 1 --output-format json "$URL" >"$TMP/oha.json" 2>/dev/null; } 2>"$TMP/oha.time"
  snap_end
  read -r OHA_RPS OHA_P99 OHA_REQ < <(python3 -c "import json; r=json.load(open('$TMP/oha.json')); print(f\"{r['summary']['requestsPerSec']:.2f} {r['latencyPercentiles']['p99']*1000:.3f}ms {sum(r['statusCodeDistribution'].values())}\")")
  OHA_CPU=$(awk -v n="$OHA_REQ" '{printf "%.2f", ($1+$2)*1e6/n}' "$TMP/oha.time")
  printf '%-6s %-10s %14s %12s %12s %8s %14s %6s\n' "$1" oha "$OHA_RPS" "$OHA_P99" "$OHA_CPU" "$TARGET_CPU" "$(target_us "$OHA_REQ")" "$IDLE"
  echo "$OHA_RPS" >>"$TMP/oha.all"
}
HAVE_OHA=$(command -v oha >/dev/null && echo 1 || echo 0)
for r in $(seq "$ROUNDS"); do
  # Rotate which tool goes first so none always meets a warmer (or hotter) machine.
  tools=(wrk scalewise)
  [ "$HAVE_OHA" = 1 ] && tools+=(oha)
  n=${#tools[@]}
  for k in $(seq 0 $((n - 1))); do
    t=${tools[$(( (k + r - 1) % n ))]}
    "run_$t" "$r"
  done
done
python3 - "$TMP/wrk.all" "$TMP/sw.all" "$TMP/oha.all" <<'PY'
import os, statistics, sys
med = lambda p: statistics.median(float(x) for x in open(p)) if os.path.exists(p) else None
mw, ms, mo = (med(p) for p in sys.argv[1:4])
print(f"median requests/s: wrk {mw:.0f}, scalewise {ms:.0f}; scalewise / wrk = {ms / mw:.2f}x")
if mo:
    print(f"median requests/s: oha {mo:.0f}; scalewise / oha = {ms / mo:.2f}x")
PY

if [ "$MEM_CONNS" -gt 0 ]; then
  echo
  echo "generator memory at $MEM_CONNS concurrent connections (closed model, 1s think time, 5s):"
  "$BIN" load "$URL" -c "$MEM_CONNS" --think-time 1s -d 5s --timeout 10s --no-progress --quiet --json "$TMP/mem.json" || true
  python3 -c "
import json; r=json.load(open('$TMP/mem.json')); g=r['generator']
print(f\"connections {r['connections']}  requests {r['requests']}  errors {r['errors']['total']}\")
print(f\"peak RSS {g['peak_rss_kib']} KiB = {g['rss_per_connection_kib']:.1f} KiB per connection (goal <= 64)\")"
fi
