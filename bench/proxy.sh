#!/usr/bin/env bash
# Side-by-side reverse-proxy benchmark on loopback, one run, same machine, same load:
#   direct (nginx backend), nginx proxy (1 worker), HAProxy (1 thread), scalewise gateway (--workers 1).
# Two nginx backends answer "hello world". HTTP/1.1 via wrk (1 thread, 64 connections);
# HTTP/2 (h2c prior knowledge) via h2load when installed.
#
# usage: bench/proxy.sh [seconds=10] [connections=64]
# needs: nginx, haproxy, wrk (Debian packages), optionally h2load (nghttp2-client);
#        builds target/release/scalewise if missing.
set -euo pipefail
D=${1:-10}; C=${2:-64}
cd "$(dirname "$0")/.."
for tool in nginx haproxy wrk; do
  command -v $tool >/dev/null || { echo "missing $tool (apt-get install nginx-light haproxy wrk)"; exit 1; }
done
[ -x target/release/scalewise ] || cargo build --release -q
T=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$T"; }
trap cleanup EXIT
cat > $T/backend.conf <<NG
worker_processes 1; daemon off; pid $T/b.pid; error_log $T/b.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000;
  server { listen 127.0.0.1:9001; location / { return 200 "hello world\n"; } }
  server { listen 127.0.0.1:9002; location / { return 200 "hello world\n"; } } }
NG
cat > $T/proxy.conf <<NG
worker_processes 1; daemon off; pid $T/p.pid; error_log $T/p.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000;
  upstream be { server 127.0.0.1:9001; server 127.0.0.1:9002; keepalive 64; }
  server { listen 127.0.0.1:9080; listen 127.0.0.1:9180 http2;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
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
frontend f
  bind 127.0.0.1:9081
  bind 127.0.0.1:9181 proto h2
  default_backend b
backend b
  balance roundrobin
  server s1 127.0.0.1:9001
  server s2 127.0.0.1:9002
HA
nginx -c $T/backend.conf & 
nginx -c $T/proxy.conf &
haproxy -f $T/haproxy.cfg &
target/release/scalewise gateway --listen 127.0.0.1:9082 --backend 127.0.0.1:9001 \
  --backend 127.0.0.1:9002 --workers 1 --admin 127.0.0.1:0 >$T/gw.log 2>&1 &
for port in 9001 9002 9080 9081 9082; do
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done
run() { # name url
  out=$(wrk -t1 -c$C -d${D}s --latency "$2" 2>&1)
  rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
  p50=$(echo "$out" | awk '$1=="50%"{print $2}')
  p99=$(echo "$out" | awk '$1=="99%"{print $2}')
  errs=$(echo "$out" | awk '/Non-2xx|Socket errors/{print}' | tr '\n' ' ')
  printf '%-8s http1 rps=%-10s p50=%-8s p99=%-8s %s\n' "$1" "$rps" "$p50" "$p99" "$errs"
}
run direct  http://127.0.0.1:9001/
run nginx   http://127.0.0.1:9080/
run haproxy http://127.0.0.1:9081/
run gateway http://127.0.0.1:9082/
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
echo "gateway RSS after run: $(ps -o rss= -p $(pgrep -f 'scalewise gateway --listen 127.0.0.1:9082' | head -1)) KiB"
