"""Repeated log lines, rate-limited: a flood of junk (or an attacker's guesses) must not
become a flood of log lines. The one rate limiter of the project, for every layer (it
imports nothing of the runner, so the MQTT side and the dashboard both use it)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

PERIOD = 10.0  # seconds between two lines of one kind

Summary = Literal["suffix", "line"]


@dataclass
class _Window:
    started: float
    sent: int = 0
    held: int = 0


class RateLimitedLog:
    """`log(key, level, msg, *args)`: at most `burst` lines per `key` per `period`.

    A held-back line is not lost: the next line of that key after the period says how many
    came since, either at its end (`summary="suffix"`: "... (and 4 more like it in the last
    11 s)") or as a line of its own before it (`summary="line"`: "(47 similar lines left
    out in the last 60 s)").
    """

    def __init__(self, logger: logging.Logger, period: float = PERIOD,
                 clock: Callable[[], float] = time.monotonic, *, burst: int = 1,
                 summary: Summary = "suffix") -> None:
        self._logger = logger
        self._period = period
        self._clock = clock
        self._burst = burst
        self._summary = summary
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}

    def log(self, key: str, level: int, msg: str, *args: object) -> bool:
        """Log now unless `key` used up its lines within the period; True when written."""
        now = self._clock()
        held, since = 0, 0.0
        with self._lock:
            window = self._windows.get(key)
            if window is not None and now - window.started < self._period:
                if window.sent >= self._burst:
                    window.held += 1
                    return False
            else:
                if window is not None:
                    held, since = window.held, now - window.started
                window = self._windows[key] = _Window(now)
            window.sent += 1
        if held and self._summary == "line":
            self._logger.log(level, "(%d similar lines left out in the last %.0f s)",
                             held, self._period)
        elif held:
            msg = f"{msg} (and {held} more like it in the last {since:.0f} s)"
        self._logger.log(level, msg, *args)
        return True

    def warning(self, key: str, msg: str, *args: object) -> bool:
        return self.log(key, logging.WARNING, msg, *args)
