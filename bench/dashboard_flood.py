"""Benchmark: half-open HTTP connections against the dashboard at a low open-file limit.

A child process serves a one-route app at RLIMIT_NOFILE 200 (soft and hard), once with
uvicorn configured as the dashboard was before issue 12 (the baseline: no cap, no head
timeout, listen backlog 128) and once through `DashboardServer` (cap, eviction of the
oldest idle connection, head timeout). This process opens 250 half-open connections
(a request line and one header, never finished), then times the first real request
that gets a 200, and counts the child's "Too many open files" log lines over 15 s.

    .venv/bin/python bench/dashboard_flood.py [--connections 250] [--runs 3]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FD_LIMIT = 200
WINDOW = 15.0
HALF_OPEN = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

CHILD = f"""
import asyncio, logging, resource, socket, sys, time
resource.setrlimit(resource.RLIMIT_NOFILE, ({FD_LIMIT}, {FD_LIMIT}))
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from runner.web.server import DashboardServer
app = Starlette(routes=[Route("/", lambda r: PlainTextResponse("ok"))])
port = int(sys.argv[2])
if sys.argv[1] == "baseline":
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    cfg = uvicorn.Config(app, log_config=None, log_level=logging.WARNING, access_log=False,
                         lifespan="on", server_header=False)
    asyncio.run(uvicorn.Server(cfg).serve(sockets=[sock]))
else:
    DashboardServer(app, port=port).start()
    while True:
        time.sleep(1)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(port: int) -> bool:
    try:
        with NO_PROXY.open(f"http://127.0.0.1:{port}/", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def run(mode: str, connections: int) -> tuple[float, float | None, int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, mode, str(port)], cwd=ROOT,
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    assert proc.stderr is not None
    stderr = proc.stderr
    threading.Thread(target=lambda: lines.extend(stderr), daemon=True).start()
    deadline = time.monotonic() + 20
    while not answers(port) and time.monotonic() < deadline:
        time.sleep(0.05)
    socks = []
    start = time.monotonic()
    try:
        for _ in range(connections):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(HALF_OPEN)
            socks.append(s)
        opened = time.monotonic() - start
        flood = time.monotonic()
        answered: float | None = None
        while time.monotonic() - flood < WINDOW:
            if answers(port):
                answered = time.monotonic() - flood
                break
        time.sleep(max(0.0, WINDOW - (time.monotonic() - flood)))
        return opened, answered, sum("Too many open files" in line for line in lines)
    finally:
        for s in socks:
            s.close()
        proc.kill()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=250)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"RLIMIT_NOFILE {FD_LIMIT}, {args.connections} half-open connections, "
          f"{args.runs} runs each, log lines counted over {WINDOW:.0f} s")
    print("| server | opened in s (median) | first 200 after s (median; - = none) "
          "| 'Too many open files' lines (median) |")
    print("|---|---:|---:|---:|")
    for mode in ("baseline", "guarded"):
        results = [run(mode, args.connections) for _ in range(args.runs)]
        times = [a for _, a, _ in results if a is not None]
        answered = f"{statistics.median(times):.3f}" if len(times) == len(results) else (
            f"- ({len(results) - len(times)} of {len(results)} runs never)")
        print(f"| {mode} | {statistics.median(o for o, _, _ in results):.3f} | {answered} "
              f"| {statistics.median(e for _, _, e in results):.0f} |", flush=True)


if __name__ == "__main__":
    main()
