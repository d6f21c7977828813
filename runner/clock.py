"""The room's clock: which zone it keeps, how that zone is named, epoch seconds in it.

Shared by the show scheduler, the service's status, the dashboard and `runner history`,
so none of them imports another for a time zone.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import tzlocal

from runner.errors import ShowError
from runner.model import Config


def timezone_for(config: Config) -> tzinfo:
    """The config's timezone, or the system's when it names none."""
    if config.timezone:
        try:
            return ZoneInfo(config.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ShowError(
                f"timezone {config.timezone!r} is unknown; use a name like \"Europe/Berlin\""
            ) from None
    return system_timezone()


def system_timezone() -> tzinfo:
    """The machine's zone."""
    zone: tzinfo = tzlocal.get_localzone()
    return zone


def timezone_name(tz: tzinfo | None) -> str:
    """How a person reads the zone: its IANA name where known ("Europe/Berlin")."""
    if tz is None:
        return "local time"
    return str(getattr(tz, "key", None) or tz.tzname(datetime.now(tz)) or "local time")


def iso(epoch: object, tz: tzinfo | None,
        timespec: Literal["seconds", "milliseconds"] = "seconds") -> str | None:
    """Epoch seconds as ISO 8601 with the zone's UTC offset; anything not a number is None."""
    if isinstance(epoch, bool) or not isinstance(epoch, (int, float)):
        return None
    return datetime.fromtimestamp(float(epoch), tz).isoformat(timespec=timespec)
