"""`runner shows`: the next start of every configured show (scene, ISO date and time, weekday)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runner.cli import EXIT_ERROR, EXIT_OK
from runner.commands._common import DEFAULT_CONFIG, config_from_args
from runner.shows import WEEKDAY_NAMES, ShowError, describe, next_starts

HEADER = ("SCENE", "NEXT START", "WEEKDAY", "SCHEDULE")


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    try:
        starts = next_starts(config)
    except ShowError as e:
        print(f"runner shows: {e}", file=sys.stderr)
        return EXIT_ERROR
    if not starts:
        print(no_shows_message(config.source))
        return EXIT_OK
    rows = [
        (show.scene,
         at.isoformat(timespec="seconds") if at else "never",
         WEEKDAY_NAMES[at.weekday()] if at else "-",
         describe(show))
        for show, at in sorted(starts, key=lambda s: (s[1] is None, s[1] and s[1].timestamp()))
    ]
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    for r in [HEADER, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return EXIT_OK


def no_shows_message(source: Path | None) -> str:
    """Why the list is empty: the config names no shows, or there is no config at all."""
    if source is not None:
        return f"No shows configured in {source}; add them under `shows:`."
    looked = Path.cwd() / DEFAULT_CONFIG
    return (f"No config found: runner looked for {looked} (without --config it looks only "
            "there), so no shows are configured. Pass --config FILE, e.g. "
            "runner shows --config /etc/runner/runner.yaml.")
