"""The `runner` command line: parses arguments and hands each command to its module.

Command modules are imported only when their command runs, so `runner --help` and
`runner validate` never import paho, vlc or apscheduler.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from datetime import date

from runner import __version__
from runner.logtime import RoomClockFormatter

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_FEEDBACK_FAILED = 3
EXIT_INTERRUPTED = 130


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        metavar="FILE",
        help="room config (default: ./runner.yaml when present)",
    )
    p.add_argument(
        "--broker",
        metavar="HOST[:PORT]",
        help="MQTT broker, overriding the config",
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log lines")
    p.add_argument("-q", "--quiet", action="count", default=0, help="fewer log lines")


def _iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date; write it as YYYY-MM-DD, for example 2026-10-25") from None


def _day_count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 366:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days from 1 to 366")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runner",
        description="Declarative scene runner for museum and escape-room rooms.",
    )
    parser.add_argument("--version", action="version", version=f"runner {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("validate", help="check scene files, folders and a config")
    _common(p)
    p.add_argument("paths", nargs="*", metavar="PATH", help="scene files or folders")
    p.add_argument("--strict", action="store_true", help="treat warnings as errors")
    p.add_argument("--format", choices=["text", "json"], default="text")

    p = sub.add_parser("plan", help="print a scene's timeline")
    _common(p)
    p.add_argument("scene", metavar="SCENE", help="scene id or path to a scene file")

    p = sub.add_parser("play", help="play one scene and report what happened")
    _common(p)
    p.add_argument("scene", metavar="SCENE", help="scene id or path to a scene file")
    p.add_argument("--simulate", action="store_true", help="log commands, send nothing")
    p.add_argument("--report", metavar="FILE", help="write the action records as JSON")

    p = sub.add_parser("serve", help="run the room service")
    _common(p)

    p = sub.add_parser("shows", help="next start of every configured show")
    _common(p)
    p.add_argument("--from", dest="from_date", type=_iso_date, metavar="DATE",
                   help="list every start from this local date (YYYY-MM-DD) on, "
                        "with its UTC offset")
    p.add_argument("--days", type=_day_count, metavar="N",
                   help="how many days to list (default 1; from today without --from)")

    p = sub.add_parser("devices", help="devices seen on the broker")
    _common(p)
    p.add_argument("--wait", type=float, default=1.0, metavar="S",
                   help="seconds to collect retained presence messages")

    p = sub.add_parser("history", help="the last scene runs")
    _common(p)
    p.add_argument("-n", "--limit", type=int, default=20, help="how many runs")

    p = sub.add_parser("simulate", help="virtual ESP32s that answer commands")
    _common(p)
    p.add_argument("--device", action="append", default=[], metavar="ID:TOPIC[,TOPIC...]")
    p.add_argument("--latency", default="0.05", metavar="S|MIN-MAX")
    p.add_argument("--error-rate", type=float, default=0.0, metavar="R")
    p.add_argument("--flaky", action="store_true", help="drop off and come back now and then")

    p = sub.add_parser("demo", help="embedded broker, virtual devices, dashboard, demo scene")
    _common(p)
    p.add_argument("--port", type=int, default=8080, help="dashboard port (a free one if taken)")
    return parser


def setup_logging(verbose: int, quiet: int) -> None:
    level = logging.INFO - 10 * verbose + 10 * quiet
    handler = logging.StreamHandler(sys.stderr)
    # The system's clock until the config is read; then the room's (runner.logtime.use_zone).
    handler.setFormatter(RoomClockFormatter())
    logging.basicConfig(level=max(logging.DEBUG, min(logging.CRITICAL, level)),
                        handlers=[handler])


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    module = importlib.import_module(f"runner.commands.{args.command}")
    # Errors a person can fix are printed as sentences, never as a traceback.
    from runner.errors import RunnerError, ValidationFailed  # noqa: PLC0415

    try:
        return int(module.run(args))
    except ValidationFailed as e:
        from runner.commands._common import print_diagnostics  # noqa: PLC0415

        print_diagnostics(e.diagnostics, stream=sys.stderr)
        return EXIT_ERROR
    except RunnerError as e:
        print(f"runner {args.command}: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `runner validate scenes/ | head`: the reader left. Point stdout at /dev/null so
        # the flush at exit does not print a traceback either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
