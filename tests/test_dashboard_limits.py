"""Idle and half-open connections must not take the room down (issue 12, fault 4).

The service runs with a low open-file limit (hard and soft, so raising the soft limit
cannot help) and more half-open HTTP connections than its connection cap: the dashboard
still answers, the half-open ones are closed after the header timeout, and the MQTT
client reconnects after a broker restart while they are open.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from runner.web.limits import connection_cap
from runner.web.server import DashboardServer
from tests.brokers import Mosquitto, free_port
from tests.conftest import REPO, wait_until

FD_LIMIT = 200  # the room's runner at a (very) low open-file limit
HALF_OPEN = b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def answers(url: str) -> bool:
    try:
        with NO_PROXY.open(url, timeout=3) as r:
            return bool(r.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def open_half_open(port: int, count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(HALF_OPEN)
        socks.append(s)
    return socks


def closed_by_server(s: socket.socket, timeout: float) -> bool:
    s.settimeout(timeout)
    try:
        return s.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


class Stderr:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self.lock:
                self.lines.append(line)

    @property
    def text(self) -> str:
        with self.lock:
            return "".join(self.lines)


@pytest.fixture
def closing() -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    yield socks
    for s in socks:
        s.close()


def test_half_open_connections_over_the_cap_leave_room_for_a_real_request(
        closing: list[socket.socket]) -> None:
    async def status(request: Request) -> PlainTextResponse:
        await request.body()
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/api/status", status, methods=["GET", "POST"])])
    server = DashboardServer(app, port=0, max_connections=20, header_timeout=1.0)
    server.start()
    try:
        slow_post = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        slow_post.sendall(b"POST /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          b"Content-Length: 100\r\n\r\n{\"scene\"")
        closing.append(slow_post)
        closing.extend(open_half_open(server.port, 20 + 50))
        wait_until(lambda: answers(f"{server.url}api/status"), timeout=20,
                   what="a real request while 70 half-open connections are open")
        assert server.guard is not None and server.guard.open <= 20
        still_open = [s for s in closing if not closed_by_server(s, 15)]
        assert still_open == [], f"{len(still_open)} half-open connections outlived the timeout"
    finally:
        server.stop()


def test_at_the_cap_the_oldest_idle_connection_makes_room_for_a_real_request(
        closing: list[socket.socket]) -> None:
    app = Starlette(routes=[Route("/", lambda _r: PlainTextResponse("ok"))])
    server = DashboardServer(app, port=0, max_connections=20, header_timeout=600)
    server.start()
    try:
        closing.extend(open_half_open(server.port, 20 + 50))
        # the header timeout is far away: the answer comes while the cap is full
        wait_until(lambda: answers(server.url), timeout=20,
                   what="a real request at the cap (no 503, no wait for the header timeout)")
        assert server.guard is not None
        wait_until(lambda: server.guard is not None and server.guard.evicted >= 50,
                   what="the 50 oldest half-open connections evicted")
        assert all(closed_by_server(s, 10) for s in closing[:50])
        assert server.guard.open <= 20
    finally:
        server.stop()


def test_connection_cap_keeps_descriptors_in_reserve() -> None:
    assert connection_cap(256, 65536) == 256
    assert connection_cap(256, 1024) == 256
    assert connection_cap(2000, 1024) == 768
    assert connection_cap(256, 200) == 72
    assert connection_cap(256, 100) == 1


# setrlimit in the child before the runner starts (preexec_fn is unsafe with threads)
LOW_FD_LIMIT = (
    "import resource, runpy, sys\n"
    f"resource.setrlimit(resource.RLIMIT_NOFILE, ({FD_LIMIT}, {FD_LIMIT}))\n"
    "sys.argv[0] = 'runner'\n"
    "runpy.run_module('runner', run_name='__main__', alter_sys=True)\n"
)


def test_a_room_at_a_low_fd_limit_survives_more_half_open_connections_than_it_has_fds(
        tmp_path: Path, mosquitto: Mosquitto, closing: list[socket.socket]) -> None:
    dash = free_port()
    (tmp_path / "scenes").mkdir()
    (tmp_path / "scenes" / "intro.yaml").write_text(
        "name: Intro\nactions:\n  - {at: 0, topic: room1/light, message: \"ON\", "
        "feedback: none}\n")
    config = tmp_path / "runner.yaml"
    config.write_text(
        f"room: room1\nbroker: {{host: 127.0.0.1, port: {mosquitto.port}, "
        "reconnect_delay: 0.2}\n"
        f"scenes_dir: scenes\ndashboard: {{port: {dash}, header_timeout: 3}}\n")
    proc = subprocess.Popen(
        [sys.executable, "-c", LOW_FD_LIMIT, "serve", "--config", str(config)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    log = Stderr(proc)
    try:
        wait_until(lambda: "ready" in log.text, timeout=30, what=f"ready in:\n{log.text}")
        url = f"http://127.0.0.1:{dash}/api/status"
        wait_until(lambda: answers(url), timeout=10, what="the dashboard")
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        assert re.search(rf"Max open files\s+{FD_LIMIT}\s+{FD_LIMIT}\s", limits), limits
        # more half-open connections than the runner has descriptors at all
        closing.extend(open_half_open(dash, FD_LIMIT + 50))
        wait_until(lambda: answers(url), timeout=20,
                   what=f"the dashboard under {FD_LIMIT + 50} half-open connections")
        mosquitto.restart()
        wait_until(lambda: log.text.count("connected to MQTT broker") >= 2, timeout=30,
                   what=f"the runner reconnecting after the broker restart:\n{log.text}")
        assert answers(url)
        still_open = [s for s in closing if not closed_by_server(s, 15)]
        assert still_open == [], f"{len(still_open)} half-open connections outlived the timeout"
        assert proc.poll() is None, log.text
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    text = log.text
    assert "Too many open files" not in text or text.count("Too many open files") < 20
    assert "Traceback" not in text, text
