#!/usr/bin/env python3
"""Open N keep-alive client connections through a proxy, send one request on each, then hold
them idle and report the proxy's resident memory growth (from /proc/PID/status).

usage: bench/idle_conns.py PID HOST:PORT [N=10000]
Raise the open-file limit first (ulimit -n 65536) for both this script and the proxy.
"""
import asyncio, sys

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")

async def one(host, port, conns, sem):
    async with sem:
        r, w = await asyncio.open_connection(host, port)
        w.write(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        await w.drain()
        head = await r.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await r.readexactly(length)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head[:40])
        conns.append((r, w))

async def main():
    pid, target = int(sys.argv[1]), sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
    host, port = target.rsplit(":", 1)
    before = rss_kib(pid)
    conns, sem = [], asyncio.Semaphore(500)
    await asyncio.gather(*(one(host, int(port), conns, sem) for _ in range(n)))
    await asyncio.sleep(1)  # let the proxy settle its buffers before reading RSS
    after = rss_kib(pid)
    print(f"connections={len(conns)} rss_before={before}KiB rss_after={after}KiB "
          f"growth={(after - before) / 1024:.1f}MiB per_conn={(after - before) * 1024 / max(1, len(conns)):.0f}B")
    for _, w in conns:
        w.close()

asyncio.run(main())
