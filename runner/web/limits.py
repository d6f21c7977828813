"""File-descriptor headroom and a connection guard for the dashboard.

An idle or half-open HTTP connection costs one file descriptor, and the MQTT client
needs descriptors too (a reconnect after a broker restart opens a new socket). So the
process raises its soft RLIMIT_NOFILE to the hard limit, the dashboard takes at most
`max_connections` of them (and never more than the soft limit minus a reserve), closes
a connection at once when it is over that cap, and closes a connection that has not
sent a complete request (head, and body if any) within `header_timeout` seconds of
connecting or of its previous response (slowloris, slow POST).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
from dataclasses import dataclass, field
from typing import Any, Protocol

from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from runner.ratelimitlog import RateLimitedLog

log = logging.getLogger("dashboard")

LOG_BURST = 10  # dashboard warnings of one kind written per LOG_PERIOD; the rest summed up
LOG_PERIOD = 60.0

FD_TARGET = 65536  # when the hard limit is unlimited, raise the soft limit this far
FD_RESERVE_MIN = 64  # descriptors the dashboard leaves for MQTT, media, history, logs
ACCEPT_BACKLOG = 16  # the listen backlog, also how many connections asyncio accepts in one go
# Connections over the cap are accepted before they are closed, a few batches at a time.
FD_IN_FLIGHT = 4 * ACCEPT_BACKLOG
FD_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def raise_fd_limit() -> int:
    """Raises the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = FD_TARGET if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("Could not raise the open-file limit from %d to %d (%s)",
                        soft, target, exc)
    return FD_TARGET if soft == resource.RLIM_INFINITY else soft


def connection_cap(max_connections: int, soft_limit: int) -> int:
    """HTTP connections allowed: the configured cap, kept well below the open-file limit."""
    reserve = max(FD_RESERVE_MIN + FD_IN_FLIGHT, soft_limit // 4)
    return max(1, min(max_connections, soft_limit - reserve))


class Guarded(Protocol):
    def idle(self) -> bool: ...
    def evict(self) -> None: ...


@dataclass
class ConnectionGuard:
    """The dashboard's open connections, oldest first (used in the server's loop thread only).

    At the cap, a new connection takes the place of the oldest one that is not in the
    middle of a request (half-open, or idle between keep-alive requests); when every one
    is busy, the new connection is closed at once.
    """

    cap: int
    header_timeout: float
    members: dict[Guarded, None] = field(default_factory=dict)
    refused: int = 0
    evicted: int = 0

    @property
    def open(self) -> int:
        return len(self.members)

    def admit(self, conn: Guarded) -> bool:
        if len(self.members) >= self.cap:
            victim = next((m for m in self.members if m.idle()), None)
            if victim is None:
                self.refused += 1
                return False
            del self.members[victim]
            self.evicted += 1
            victim.evict()
        self.members[conn] = None
        return True

    def release(self, conn: Guarded) -> None:
        self.members.pop(conn, None)


def guarded_protocol(guard: ConnectionGuard) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with the connection cap and the request-head timeout."""

    class GuardedH11Protocol(H11Protocol):
        def __init__(self, config: Config, server_state: ServerState,
                     app_state: dict[str, Any],
                     _loop: asyncio.AbstractEventLoop | None = None) -> None:
            super().__init__(config, server_state, app_state, _loop)
            self._admitted = False
            self._head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            if not guard.admit(self):
                transport.abort()  # cheap and silent: no response, no log line
                return
            self._admitted = True
            super().connection_made(transport)
            self._arm_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            if not self._admitted:
                return
            self._admitted = False
            guard.release(self)
            self._cancel_head_timer()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_head_timer()  # the next request on this connection gets the same time

        def _arm_head_timer(self) -> None:
            self._cancel_head_timer()
            self._head_timer = self.loop.call_later(guard.header_timeout, self._head_overdue)

        def _cancel_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def idle(self) -> bool:
            # a request whose head arrived has a cycle that is not complete yet
            return self.cycle is None or self.cycle.response_complete

        def evict(self) -> None:
            self.transport.abort()

        def _head_overdue(self) -> None:
            self._head_timer = None
            # a request body still trickling in is overdue too (slow-POST slowloris)
            reading = self.cycle is not None and self.cycle.more_body
            if self.idle() or reading:
                self.transport.abort()

    return GuardedH11Protocol


def dashboard_log_limit(logger: logging.Logger) -> RateLimitedLog:
    """The dashboard's rate limit on a flood of warnings (wrong tokens, fd exhaustion)."""
    return RateLimitedLog(logger, period=LOG_PERIOD, burst=LOG_BURST, summary="line")


def limited_exception_handler(
        limiter: RateLimitedLog) -> Any:
    """An event-loop exception handler that does not flood the log with fd errors."""

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in FD_ERRORS:
            limiter.warning("fd", "The dashboard is out of file descriptors (%s); "
                            "new connections wait until some close", exc.strerror)
            return
        loop.default_exception_handler(context)

    return handle
