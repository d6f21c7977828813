"""Serves the dashboard with uvicorn in a background thread: start, stop, the bound port."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time

import uvicorn
from starlette.types import ASGIApp

from runner.errors import RunnerError
from runner.web.limits import (
    ACCEPT_BACKLOG,
    ConnectionGuard,
    connection_cap,
    dashboard_log_limit,
    guarded_protocol,
    limited_exception_handler,
    raise_fd_limit,
)

log = logging.getLogger("dashboard")

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
# uvicorn's start/stop lines say nothing staff need; its warnings and errors still show.
UVICORN_LOG_LEVEL = logging.WARNING
GRACEFUL_SHUTDOWN = 1  # seconds open requests get before they are cut at stop()
MAX_CONNECTIONS = 256  # open HTTP connections (live feeds included); more are closed at once
HEADER_TIMEOUT = 10.0  # seconds a connection has to send a complete request head
KEEP_ALIVE = 5  # seconds an idle keep-alive connection stays open
LISTEN_BACKLOG = 128  # connections the kernel queues before they are accepted


class DashboardServer:
    """uvicorn on `bind:port` in a daemon thread; port 0 picks a free port (see `port`)."""

    def __init__(self, app: ASGIApp, bind: str = "127.0.0.1", port: int = 8080, *,
                 start_timeout: float = START_TIMEOUT, stop_timeout: float = STOP_TIMEOUT,
                 graceful_shutdown: int = GRACEFUL_SHUTDOWN,
                 max_connections: int = MAX_CONNECTIONS,
                 header_timeout: float = HEADER_TIMEOUT) -> None:
        self.app = app
        self.bind = bind
        self.port = port
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._graceful = graceful_shutdown
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._max_connections = max_connections
        self._header_timeout = header_timeout
        self.guard: ConnectionGuard | None = None

    @property
    def url(self) -> str:
        host = f"[{self.bind}]" if ":" in self.bind else self.bind
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        """Listen and serve; raises RunnerError with a way out when the port is taken."""
        cap = connection_cap(self._max_connections, raise_fd_limit())
        guard = ConnectionGuard(cap=cap, header_timeout=self._header_timeout)
        self.guard = guard
        sock = self._listen()
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self.app, log_config=None, log_level=UVICORN_LOG_LEVEL, access_log=False,
            lifespan="on", http=guarded_protocol(guard), backlog=ACCEPT_BACKLOG,
            # uvicorn's own limit (503) only backs up the guard: evicted connections
            # still count for uvicorn until their close has run
            limit_concurrency=cap + ACCEPT_BACKLOG, timeout_keep_alive=KEEP_ALIVE,
            timeout_graceful_shutdown=self._graceful, server_header=False,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(
            target=self._serve, args=(server, sock), name="dashboard", daemon=True)
        self._thread.start()
        # uvicorn offers a flag, not an event, for "listening"
        deadline = time.monotonic() + self._start_timeout
        while not server.started and self._alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if server.started:
            # asyncio listens with the small batch size as backlog; the kernel's queue may
            # be longer (queued connections hold no descriptor of ours), so a burst of
            # connections is not answered with dropped SYNs and 1 s retries
            with contextlib.suppress(OSError):
                sock.listen(LISTEN_BACKLOG)
        if not server.started:
            self.stop()
            why = f" ({self._failure})" if self._failure else ""
            raise RunnerError(
                f"The dashboard did not start on {self.url}{why}; the log above says why."
            )
        log.info("Dashboard on %s", self.url)

    def stop(self) -> None:
        """Ends open live streams, stops uvicorn and waits for its thread."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        close_streams = getattr(getattr(self.app, "state", None), "close_streams", None)
        if callable(close_streams):
            close_streams()
        server.should_exit = True
        thread.join(self._stop_timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(self._stop_timeout)
        self._server = None
        self._thread = None

    def _alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _listen(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.bind else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.bind, self.port))
        except OSError as exc:
            sock.close()
            raise RunnerError(
                f"The dashboard cannot listen on {self.bind}:{self.port} ({exc.strerror}); "
                "set another `dashboard: {port: ...}` in runner.yaml, or stop what uses it."
            ) from None
        sock.listen(LISTEN_BACKLOG)
        sock.set_inheritable(True)
        return sock

    @staticmethod
    async def _run(server: uvicorn.Server, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(limited_exception_handler(dashboard_log_limit(log)))
        await server.serve(sockets=[sock])

    def _serve(self, server: uvicorn.Server, sock: socket.socket) -> None:
        try:
            asyncio.run(self._run(server, sock))
        except BaseException as exc:  # SystemExit from uvicorn's startup too
            self._failure = exc
            log.error("The dashboard stopped: %s", exc)
        finally:
            with contextlib.suppress(OSError):
                sock.close()

