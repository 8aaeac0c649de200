#!/usr/bin/env bash
# Side-by-side reverse-proxy benchmark on loopback, one run, same machine, same load:
#   direct (nginx backend), nginx proxy (1 worker), HAProxy (1 thread), scalewise gateway (--workers 1).
# Two nginx backends answer "hello world". HTTP/1.1 via wrk (1 thread, 64 connections);
# HTTP/2 (h2c prior knowledge) via h2load when installed.
#
# usage: [ROUNDS=1] [GATEWAY=path] bench/proxy.sh [seconds=10] [connections=64]
#   GATEWAY: the scalewise binary to run (default target/release/scalewise), e.g. a saved
#   build for a before/after comparison under the same conditions.
#   ROUNDS>1 repeats the HTTP/1.1 runs (proxies in rotating order) and prints medians.
#   cpu = the proxy's own user+sys CPU time per request (from /proc/PID/stat), so a proxy that
#   is not the bottleneck still shows what each request costs it.
#
# Equal work: the gateway adds, by default, X-Forwarded-For (appended), X-Forwarded-Proto,
# Forwarded (for=…;proto=…, appended) and X-Request-Id (the client's, else a fresh random id)
# to every request it forwards, and X-Request-Id to responses that lack one. nginx and HAProxy
# below are configured to do the same, as a real deployment would, so all three proxies do
# the same job (and the backends parse the same headers). At start the script asks each proxy
# for /_headers (the backend echoes what it received) and prints the answers, so a config
# that stopped sending them shows.
# needs: nginx, haproxy, wrk (Debian packages), optionally h2load (nghttp2-client);
#        builds target/release/scalewise if missing.
set -euo pipefail
D=${1:-10}; C=${2:-64}
cd "$(dirname "$0")/.."
for tool in nginx haproxy wrk; do
  command -v $tool >/dev/null || { echo "missing $tool (apt-get install nginx-light haproxy wrk)"; exit 1; }
done
GATEWAY=${GATEWAY:-target/release/scalewise}
[ -x "$GATEWAY" ] || cargo build --release -q
T=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$T"; }
trap cleanup EXIT
cat > $T/backend.conf <<NG
worker_processes 1; daemon off; pid $T/b.pid; error_log $T/b.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000;
  server { listen 127.0.0.1:9001; listen 127.0.0.1:9002;
    location / { return 200 "hello world\n"; }
    # Echoes the forwarding headers the proxy sent (checked once at start).
    location = /_headers { return 200 "xff=\$http_x_forwarded_for proto=\$http_x_forwarded_proto fwd=\$http_forwarded rid=\$http_x_request_id\n"; } } }
NG
cat > $T/proxy.conf <<NG
worker_processes 1; daemon off; pid $T/p.pid; error_log $T/p.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000;
  upstream be { server 127.0.0.1:9001; server 127.0.0.1:9002; keepalive 64; }
  # What the gateway adds by default (see the header of this script).
  map \$http_x_request_id \$rid { "" \$request_id; default \$http_x_request_id; }
  map \$http_forwarded \$fwd { "" "for=\$remote_addr;proto=\$scheme";
    default "\$http_forwarded, for=\$remote_addr;proto=\$scheme"; }
  map \$upstream_http_x_request_id \$resp_rid { "" \$rid; default ""; }
  server { listen 127.0.0.1:9080; listen 127.0.0.1:9180 http2;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header Forwarded \$fwd;
      proxy_set_header X-Request-Id \$rid;
      add_header X-Request-Id \$resp_rid always; } } }
NG
cat > $T/haproxy.cfg <<HA
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
  # What the gateway adds by default (see the header of this script).
  unique-id-format %[rand,hex]%[rand,hex]
frontend f
  bind 127.0.0.1:9081
  bind 127.0.0.1:9181 proto h2
  option forwardfor
  http-request set-header X-Forwarded-Proto http
  http-request add-header Forwarded for=%[src];proto=http
  http-request set-header X-Request-Id %[unique-id] unless { req.hdr(x-request-id) -m found }
  http-request set-var(txn.rid) req.hdr(x-request-id)
  http-response set-header X-Request-Id %[var(txn.rid)] unless { res.hdr(x-request-id) -m found }
  default_backend b
backend b
  balance roundrobin
  server s1 127.0.0.1:9001
  server s2 127.0.0.1:9002
HA
nginx -c $T/backend.conf & 
nginx -c $T/proxy.conf & NGINX_MASTER=$!
haproxy -f $T/haproxy.cfg & HAPROXY_PID=$!
"$GATEWAY" gateway --listen 127.0.0.1:9082 --backend 127.0.0.1:9001 \
  --backend 127.0.0.1:9002 --workers 1 --admin 127.0.0.1:0 >$T/gw.log 2>&1 & GW_PID=$!
for port in 9001 9002 9080 9081 9082; do
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done
NGINX_WORKER=$(pgrep -P $NGINX_MASTER | head -1)
for port in 9080 9081 9082; do # equal work: every proxy sends the same headers
  printf '%s: %s' $port "$(curl -s -D - -H 'X-Forwarded-For: 10.9.9.9' http://127.0.0.1:$port/_headers \
    | tr -d '\r' | awk -F': ' 'tolower($1)=="x-request-id"{r=$2} /^xff=/{b=$0} END{print b " resp-rid=" r}')"
  echo
done
ROUNDS=${ROUNDS:-1}
ticks() { [ -n "$1" ] && awk '{print $14 + $15}' /proc/$1/stat 2>/dev/null || echo 0; }
HZ=$(getconf CLK_TCK)
run() { # name url pid
  t0=$(ticks "$3")
  out=$(wrk -t1 -c$C -d${D}s --latency "$2" 2>&1)
  t1=$(ticks "$3")
  rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
  p50=$(echo "$out" | awk '$1=="50%"{print $2}')
  p99=$(echo "$out" | awk '$1=="99%"{print $2}')
  n=$(echo "$out" | awk '/requests in/{print $1}')
  cpu=$(awk -v pid="$3" -v d=$((t1 - t0)) -v n="$n" -v hz=$HZ 'BEGIN{ if (pid != "" && n > 0) printf "%.2f", d / hz * 1e6 / n; else print "-" }')
  errs=$(echo "$out" | awk '/Non-2xx|Socket errors/{print}' | tr '\n' ' ')
  printf '%-8s http1 rps=%-10s p50=%-8s p99=%-8s cpu/req=%-6s µs %s\n' "$1" "$rps" "$p50" "$p99" "$cpu" "$errs"
  echo "$1 $rps $p99 $cpu" >>$T/runs
}
NAMES=(direct nginx haproxy gateway)
URLS=(http://127.0.0.1:9001/ http://127.0.0.1:9080/ http://127.0.0.1:9081/ http://127.0.0.1:9082/)
PIDS=("" "$NGINX_WORKER" "$HAPROXY_PID" "$GW_PID")
for r in $(seq "$ROUNDS"); do
  [ "$ROUNDS" -gt 1 ] && echo "round $r"
  for k in 0 1 2 3; do
    # Rotate the order of the proxies each round so none always runs on a warmer machine.
    i=$(( k == 0 ? 0 : 1 + (k - 1 + r - 1) % 3 ))
    run "${NAMES[$i]}" "${URLS[$i]}" "${PIDS[$i]}"
  done
done
if [ "$ROUNDS" -gt 1 ]; then
  python3 - $T/runs <<'PY'
import statistics, sys, collections
def ms(v):  # wrk prints 1.23ms / 850.00us / 1.02s
    for unit, f in (("ms", 1.0), ("us", 1e-3), ("s", 1e3)):
        if v.endswith(unit):
            return float(v[: -len(unit)]) * f
    return float("nan")
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    name, rps, p99, cpu = line.split()
    rows[name].append((float(rps), ms(p99), float(cpu) if cpu != "-" else float("nan")))
print("medians:")
base = statistics.median(r[0] for r in rows["nginx"])
for name in ("direct", "nginx", "haproxy", "gateway"):
    r = rows[name]
    rps = statistics.median(x[0] for x in r)
    cpu = statistics.median(x[2] for x in r)
    cpu = "-" if cpu != cpu else f"{cpu:.2f}µs"
    print(f"{name:<8} rps={rps:<10.0f} ({rps / base:.2f}x nginx)  p99={statistics.median(x[1] for x in r):.2f}ms  cpu/req={cpu}")
PY
fi
if command -v h2load >/dev/null; then
  h2() { # name url
    out=$(h2load -D $D -c $C -m 10 -t 1 "$2" 2>&1)
    rps=$(echo "$out" | awk '/^finished in/{print $4}')
    ok=$(echo "$out" | awk '/^requests:/{print $8, "succeeded,", $10, "failed"}')
    printf '%-8s h2c   rps=%-10s %s\n' "$1" "$rps" "$ok"
  }
  h2 nginx   http://127.0.0.1:9180/
  h2 haproxy http://127.0.0.1:9181/
  h2 gateway http://127.0.0.1:9082/
fi
echo "gateway RSS after run: $(ps -o rss= -p $GW_PID) KiB"
