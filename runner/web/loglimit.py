"""Rate-limited warnings: an attacker's flood must not become a log flood."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class LogLimiter:
    """At most `burst` lines per `period` seconds; the rest are counted and summed up once."""

    def __init__(self, logger: logging.Logger, *, burst: int = 10, period: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log = logger
        self._burst = burst
        self._period = period
        self._clock = clock
        self._started = -period
        self._sent = 0
        self._suppressed = 0
        self._lock = threading.Lock()

    def warning(self, msg: str, *args: object) -> bool:
        """Logs unless over the limit; returns whether the line was written."""
        now = self._clock()
        with self._lock:
            if now - self._started >= self._period:
                suppressed, self._suppressed = self._suppressed, 0
                self._started, self._sent = now, 0
            else:
                suppressed = 0
            write = self._sent < self._burst
            if write:
                self._sent += 1
            else:
                self._suppressed += 1
        if suppressed:
            self._log.warning("(%d similar lines left out in the last %.0f s)",
                              suppressed, self._period)
        if write:
            self._log.warning(msg, *args)
        return write
