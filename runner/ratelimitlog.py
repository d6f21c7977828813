"""Repeated log lines, rate-limited: the first at once, then at most one per period with
how many were held back. A flood of junk must not become a flood of log lines."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

PERIOD = 10.0  # seconds between two lines of one kind


class RateLimitedLog:
    """`log(key, level, msg, *args)`: one line per `key` per `period`, with a count.

    A held-back line is not lost: the next line of that key says how many came since.
    """

    def __init__(self, logger: logging.Logger, period: float = PERIOD,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._period = period
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def log(self, key: str, level: int, msg: str, *args: object) -> bool:
        """Log now unless `key` logged within the period; True when a line was written."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._period:
                self._held[key] = self._held.get(key, 0) + 1
                return False
            self._last[key] = now
            held = self._held.pop(key, 0)
        if held and last is not None:
            msg = f"{msg} (and {held} more like it in the last {now - last:.0f} s)"
        self._logger.log(level, msg, *args)
        return True

    def warning(self, key: str, msg: str, *args: object) -> bool:
        return self.log(key, logging.WARNING, msg, *args)
