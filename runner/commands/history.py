"""`runner history`: the last scene runs from the run history, newest first."""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
import sys
from datetime import datetime, tzinfo
from typing import Any

from runner.cli import EXIT_ERROR, EXIT_OK
from runner.clock import timezone_for, timezone_name
from runner.commands._common import config_from_args
from runner.errors import ShowError
from runner.history import default_path, open_for_reading, read_last_runs

HEADER = ("START", "SCENE", "TRIGGER", "OUTCOME", "TOOK", "FAILURES")


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    path = default_path(config)
    conn = open_for_reading(path)
    if conn is None:
        print(f"No runs recorded yet: {path} does not exist (runner serve and runner play "
              "--config write it; runs of play --simulate are not recorded).")
        return EXIT_OK
    try:
        runs = read_last_runs(conn, max(1, args.limit), records=False)
    except sqlite3.Error as e:
        print(f"runner history: {path} cannot be read ({e}); check that it is a run "
              "history and that you may read it (the service's user may: sudo -u runner "
              "runner history ...)", file=sys.stderr)
        return EXIT_ERROR
    finally:
        conn.close()
    if not runs:
        print(f"No runs recorded yet in {path}.")
        return EXIT_OK
    tz: tzinfo | None = None  # the machine's clock, when the config names an unknown zone
    with contextlib.suppress(ShowError):
        tz = timezone_for(config)  # the room's clock, as the shows and the dashboard use it
    print(f"Last {len(runs)} runs in {path}, newest first (times in {timezone_name(tz)}):")
    rows = [_row(r, tz) for r in runs]
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    for r in [HEADER, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return EXIT_OK


def _row(run: dict[str, Any], tz: tzinfo | None) -> tuple[str, ...]:
    start = datetime.fromtimestamp(run["started_at"], tz).strftime("%Y-%m-%d %H:%M:%S")
    took = "" if run["ended_at"] is None else f"{run['ended_at'] - run['started_at']:.1f}s"
    return (start, run["scene"], run["trigger"], run["outcome"], took, _failures(run))


def _failures(run: dict[str, Any]) -> str:
    parts = []
    for f in run["failures"]:
        what = f["feedback"] if f["feedback"] in ("ERROR", "TIMEOUT") else f["delivery"]
        parts.append(f"{f['topic']}={f['message']} {what} at {f['planned']:g}s")
    more = run.get("failure_count", len(parts)) - len(parts)
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts) or "-"
