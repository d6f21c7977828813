"""`runner serve`: the room service until SIGTERM or Ctrl-C; SIGHUP reloads the config."""

from __future__ import annotations

import argparse
import gc
import logging
import multiprocessing
import os
import signal
import sys
import threading
from multiprocessing import resource_tracker
from typing import TYPE_CHECKING

from runner.cli import EXIT_ERROR, EXIT_OK
from runner.commands._common import config_from_args, print_diagnostics
from runner.errors import RunnerError, ValidationFailed
from runner.logtime import use_zone, zone_named

if TYPE_CHECKING:
    from pathlib import Path

    from runner.service import RoomService

log = logging.getLogger("serve")

SHUTDOWN_DEADLINE = 1.8  # seconds: systemd and people expect the room to stop within 2
SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
SIGNAL_POLL = 0.5  # seconds: how often the signal loop wakes (see _back_to_sigwait)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    # Blocked before any thread exists, so every thread inherits the mask and the
    # signals wait for sigwait() below: no handler ever runs in the middle of a lock.
    # A reload reads the config in a spawned child, which needs multiprocessing's
    # resource tracker; starting that unblocks SIGINT and SIGTERM in the calling thread
    # (CPython's resource_tracker.ensure_running). Started here, before the mask, it
    # unblocks nothing later.
    resource_tracker.ensure_running()
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    # Should a library unblock one of them in some thread for a moment anyway, the
    # signal is handed back to the signal loop instead of killing the room with its
    # default action (the loop wakes twice a second so that this handler gets to run).
    for each in SIGNALS:
        signal.signal(each, _back_to_sigwait)
    from runner.service import RoomService  # noqa: PLC0415 - paho, vlc: only for serve

    try:
        service = RoomService(config)
    except ValidationFailed as e:
        print_diagnostics(e.diagnostics, stream=sys.stderr)
        print("runner serve: fix the errors above (runner validate shows them too).",
              file=sys.stderr)
        return EXIT_ERROR
    except RunnerError as e:  # ShowError included
        print(f"runner serve: {e}", file=sys.stderr)
        return EXIT_ERROR
    # Started beside the signal loop: connecting to a broker that is away takes a while,
    # and a SIGTERM meanwhile must still stop the room within 2 s.
    starter = threading.Thread(target=_start, args=(service,), name="start", daemon=True)
    starter.start()
    reloader: threading.Thread | None = None
    while True:
        sig = _next_signal()
        if sig != signal.SIGHUP:
            break
        if config.source is None:
            log.warning("SIGHUP: there is no config file to reload (running on defaults)")
            continue
        if reloader is not None and reloader.is_alive():
            log.warning("SIGHUP: a reload of %s is still being read; send SIGHUP again "
                        "once it is done", config.source)
            continue
        log.info("SIGHUP: reloading %s", config.source)
        # Read beside the signal loop: a big config takes its child process seconds
        # (up to the reload's timeout), and a SIGTERM meanwhile must still stop the room
        # within the shutdown deadline.
        reloader = threading.Thread(target=_reload, args=(service, config.source),
                                    name="reload", daemon=True)
        reloader.start()
    log.info("%s: stopping the room", signal.Signals(sig).name)
    stopper = threading.Thread(target=service.shutdown, name="shutdown", daemon=True)
    stopper.start()
    stopper.join(SHUTDOWN_DEADLINE)
    if stopper.is_alive():
        safe = service.room_safe.is_set()
        log.error("Stopping took longer than %.1f s; exiting %s", SHUTDOWN_DEADLINE,
                  "(safe state and offline were sent)" if safe else
                  "before the safe state was confirmed")
        logging.shutdown()
        os._exit(EXIT_OK if safe else EXIT_ERROR)
    log.info("Stopped")
    if reloader is not None and reloader.is_alive():
        # A reload still being read: its child would hold the exit (concurrent.futures
        # joins its pool at exit) until the read ends. Nothing of it is wanted now.
        for child in multiprocessing.active_children():
            child.kill()  # it only reads files: nothing to tidy
        logging.shutdown()
        os._exit(EXIT_OK)
    return EXIT_OK


def _reload(service: RoomService, source: Path) -> None:
    service.reload(source)
    use_zone(zone_named(service.config.timezone))  # a new `timezone:` moves the log too


def _next_signal() -> int:
    while True:
        got = signal.sigtimedwait(SIGNALS, SIGNAL_POLL)
        if got is not None:
            return got.si_signo


def _back_to_sigwait(sig: int, _frame: object) -> None:
    # Runs on the main thread between two waits: sent again, the signal now stays
    # pending (blocked everywhere) for the signal loop.
    os.kill(os.getpid(), sig)


def _start(service: RoomService) -> None:
    service.start()
    service.start_dashboard()
    # Everything built at start (modules, libraries, the room) lives as long as the
    # process: frozen out of the collector, so a full collection no longer walks it. One
    # walked the whole heap while holding the GIL: 14-30 ms without a cue, typically
    # during a reload's allocations (bench/cue_under_load.py, BENCHMARKS.md).
    gc.freeze()
