"""`runner shows`: the next start of every configured show (scene, ISO date and time, weekday),
or with `--from DATE --days N` every start in that window with its UTC offset."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from pathlib import Path

from runner.cli import EXIT_ERROR, EXIT_OK
from runner.clock import timezone_for, timezone_name
from runner.commands._common import DEFAULT_CONFIG, config_from_args
from runner.model import Config
from runner.shows import (
    WEEKDAY_NAMES,
    ShowError,
    describe,
    next_starts,
    starts_between,
)

HEADER = ("SCENE", "NEXT START", "WEEKDAY", "SCHEDULE")
WINDOW_HEADER = ("START", "UTC OFFSET", "WEEKDAY", "SCENE", "SCHEDULE")


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if not config.shows:
        print(no_shows_message(config.source))
        return EXIT_OK
    window = getattr(args, "from_date", None) is not None or getattr(args, "days", None)
    try:
        if window:
            return _window(args, config)
        starts = next_starts(config)
    except ShowError as e:
        print(f"runner shows: {e}", file=sys.stderr)
        return EXIT_ERROR
    rows = [
        (show.scene,
         at.isoformat(timespec="seconds") if at else "never",
         WEEKDAY_NAMES[at.weekday()] if at else "-",
         describe(show))
        for show, at in sorted(starts, key=lambda s: (s[1] is None, s[1] and s[1].timestamp()))
    ]
    _table([HEADER, *rows])
    return EXIT_OK


def _window(args: argparse.Namespace, config: Config) -> int:
    tz = timezone_for(config)
    first: date = args.from_date or datetime.now(tz).date()
    days: int = args.days or 1
    last = first + timedelta(days=days - 1)
    starts = starts_between(config, first, days)
    span = first.isoformat() if days == 1 else f"{first.isoformat()} to {last.isoformat()}"
    print(f"Every show start on {span} ({timezone_name(tz)}), {len(starts)} in all:")
    rows = [
        (at.isoformat(timespec="seconds"), _offset(at), WEEKDAY_NAMES[at.weekday()],
         show.scene, describe(show))
        for show, at in starts
    ]
    _table([WINDOW_HEADER, *rows])
    return EXIT_OK


def _offset(at: datetime) -> str:
    offset = at.utcoffset() or timedelta()
    sign = "-" if offset < timedelta() else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return f"UTC{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def _table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def no_shows_message(source: Path | None) -> str:
    """Why the list is empty: the config names no shows, or there is no config at all."""
    if source is not None:
        return f"No shows configured in {source}; add them under `shows:`."
    looked = Path.cwd() / DEFAULT_CONFIG
    return (f"No config found: runner looked for {looked} (without --config it looks only "
            "there), so no shows are configured. Pass --config FILE, e.g. "
            "runner shows --config /etc/runner/runner.yaml.")
