"""`runner demo`: broker, virtual devices, room service and dashboard, until Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from runner.cli import EXIT_ERROR, EXIT_OK, EXIT_USAGE
from runner.commands._common import config_from_args
from runner.errors import RunnerError

# The console tells the story itself; library chatter only with -v.
QUIET_LOGGERS = ("amqtt", "transitions", "uvicorn", "uvicorn.error")


def _quieten(verbose: int) -> None:
    if verbose == 0:
        logging.getLogger().setLevel(max(logging.getLogger().level, logging.WARNING))
    if verbose < 2:
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        print(f"runner demo: --port {args.port} is not a port: give 1-65535, or 0 for "
              "any free one", file=sys.stderr)
        return EXIT_USAGE
    try:
        config = config_from_args(args)
    except RunnerError as exc:
        print(exc, file=sys.stderr)
        return EXIT_ERROR
    _quieten(args.verbose)
    # Imported here: the demo pulls in amqtt, uvicorn and the whole service.
    from runner.demo import Demo  # noqa: PLC0415

    stop = _stop_on_signals()
    # Only --broker names a broker to use: runner.yaml's (the room's) is never written to.
    demo = Demo(config.broker if args.broker else None, dashboard_port=args.port)
    try:
        demo.start()
        stop.wait()
        print("Stopping: the show goes to its safe state, devices say offline.", flush=True)
    except RunnerError as exc:
        print(f"runner demo: {exc}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        demo.stop()
    print("Stopped.", flush=True)
    return EXIT_OK


def _stop_on_signals() -> threading.Event:
    """Ctrl-C or SIGTERM asks for a clean stop; a second Ctrl-C gives up waiting for it."""
    stop = threading.Event()

    def handle(sig: int, _frame: object) -> None:
        stop.set()
        if sig == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handle)
    return stop
