#!/usr/bin/env bash
# WebSocket message throughput on loopback, side by side: direct to an echo backend, through
# nginx (1 worker), HAProxy (1 thread) and the scalewise gateway (--workers 1). The load is
# `scalewise load` in echo mode: C connections, each sends a message and waits for the echo.
#
# usage: bench/ws.sh [seconds=10] [connections=64]
# needs: nginx, haproxy (Debian packages); builds the release binary and the ws_echo example.
set -euo pipefail
D=${1:-10}; C=${2:-64}
cd "$(dirname "$0")/.."
for tool in nginx haproxy python3; do
  command -v $tool >/dev/null || { echo "missing $tool"; exit 1; }
done
cargo build --release -q --bin scalewise
cargo build --release -q -p scalewise-gateway --example ws_echo
T=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$T"; }
trap cleanup EXIT
cat > $T/proxy.conf <<NG
worker_processes 1; daemon off; pid $T/p.pid; error_log $T/p.err;
events { worker_connections 4096; }
http { access_log off;
  map \$http_upgrade \$connection_upgrade { default upgrade; '' close; }
  upstream be { server 127.0.0.1:9011; }
  server { listen 127.0.0.1:9083;
    location / { proxy_pass http://be; proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade; proxy_set_header Connection \$connection_upgrade;
      proxy_read_timeout 60s; } } }
NG
cat > $T/haproxy.cfg <<HA
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout tunnel 60s
frontend f
  bind 127.0.0.1:9084
  default_backend b
backend b
  server s1 127.0.0.1:9011
HA
target/release/examples/ws_echo 127.0.0.1:9011 2>$T/echo.log &
nginx -c $T/proxy.conf &
haproxy -f $T/haproxy.cfg &
target/release/scalewise gateway --listen 127.0.0.1:9085 --backend 127.0.0.1:9011 \
  --workers 1 --admin off >$T/gw.log 2>&1 &
for port in 9011 9083 9084 9085; do
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done
run() { # name url
  target/release/scalewise load "$2" -c "$C" -d "${D}s" --threads 1 --no-progress --quiet \
    --ws-message "hello world" --json "$T/$1.json" >/dev/null 2>"$T/$1.err" || true
  python3 - "$1" "$T/$1.json" <<'PY'
import json, sys
name, path = sys.argv[1], sys.argv[2]
try:
    r = json.load(open(path))
except Exception as e:
    print(f"{name:8} failed: {e}"); sys.exit()
errs = sum(r.get("errors", {}).values()) if isinstance(r.get("errors"), dict) else r.get("errors")
print(f"{name:8} ws echo msgs/s={r['rps']:<10.0f} p50={r['p50_ms']:.3f}ms p99={r['p99_ms']:.3f}ms errors={errs}")
PY
}
run direct  ws://127.0.0.1:9011/
run nginx   ws://127.0.0.1:9083/
run haproxy ws://127.0.0.1:9084/
run gateway ws://127.0.0.1:9085/
