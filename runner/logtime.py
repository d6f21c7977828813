"""Log line times on the room's clock: date, milliseconds and UTC offset, as the dashboard shows.

`runner` sets up logging before it has read a config; once the config is known, the room's
zone (its `timezone`, else the system's) is put on the log formatter, so log lines and the
dashboard, which shows the room's time, read alike: `2026-12-03 13:05:01.123+01:00`.
"""

from __future__ import annotations

import logging
from datetime import datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class RoomClockFormatter(logging.Formatter):
    """`%(asctime)s` as ISO 8601 with milliseconds and the offset of `zone` (None: system's)."""

    def __init__(self, fmt: str = LOG_FORMAT, zone: tzinfo | None = None) -> None:
        super().__init__(fmt)
        self.zone = zone

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        zone = self.zone
        at = (datetime.fromtimestamp(record.created, zone) if zone is not None
              else datetime.fromtimestamp(record.created).astimezone())
        return at.isoformat(sep=" ", timespec="milliseconds")


def zone_named(name: str | None) -> tzinfo | None:
    """The zone called `name` ("Europe/Berlin"); None for none or an unknown name."""
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None  # the config check names it; the log keeps the system's clock


def use_zone(zone: tzinfo | None, logger: logging.Logger | None = None) -> None:
    """Put `zone` on every RoomClockFormatter of `logger`'s handlers (the root's by default)."""
    for handler in (logger or logging.getLogger()).handlers:
        if isinstance(handler.formatter, RoomClockFormatter):
            handler.formatter.zone = zone
