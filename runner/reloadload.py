"""A reload's reading and checking, done in a child process.

Parsing and validating a big scene (20,000 actions) takes a few hundred milliseconds of
pure Python; on the service's signal thread that held the GIL and made cues fire late.
A spawned child (niced, so the player keeps the CPU too) reads the config and its scenes,
checks the shows, and hands back a typed, picklable outcome that the service swaps in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import pickle
import signal
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from runner.clock import timezone_for
from runner.configfile import load_config
from runner.errors import Diagnostic, RunnerError, ValidationFailed
from runner.model import Action, Config, Scene
from runner.scenefile import load_scenes
from runner.shows import show_trigger

LOAD_TIMEOUT = 120.0  # seconds a child may take before the reload is refused
CHILD_NICENESS = 10  # the child yields the CPU to the room's player
CHUNK = 200  # actions per pickled chunk (~1 ms to unpickle)


@dataclass(frozen=True)
class Loaded:
    """A valid config and its scenes, read by the process `pid`."""

    sent_config: Config  # with `devices` as a plain dict: a mappingproxy does not pickle
    # Each scene pickled without its actions, then its actions in small pickled chunks:
    # unpickling 20,000 actions at once holds the GIL ~80 ms; chunk by chunk, the player's
    # thread gets its turn in between.
    packed: tuple[tuple[bytes, tuple[bytes, ...]], ...]
    pid: int

    @property
    def scenes(self) -> dict[str, Scene]:
        scenes: dict[str, Scene] = {}
        for head, chunks in self.packed:
            scene: Scene = pickle.loads(head)  # noqa: S301 - our own child's bytes
            actions: list[Action] = []
            for chunk in chunks:
                actions.extend(pickle.loads(chunk))  # noqa: S301
                time.sleep(0)  # let the player run between chunks
            scenes[scene.id] = dataclasses.replace(scene, actions=tuple(actions))
        return scenes

    @property
    def config(self) -> Config:
        return dataclasses.replace(self.sent_config,
                                   devices=MappingProxyType(dict(self.sent_config.devices)))


@dataclass(frozen=True)
class Refused:
    """Why a reload cannot apply: file diagnostics, or one reason in words."""

    diagnostics: tuple[Diagnostic, ...]
    errors: int  # how many of the diagnostics are errors
    reason: str | None
    pid: int


def load(path: Path) -> Loaded | Refused:
    """Read and check `path` and its scenes here, in this process."""
    try:
        new = load_config(path)
        scenes = load_scenes(new.scenes_dir, default_room=new.room, media_dir=new.media_dir)
        tz = timezone_for(new)
        for show in new.shows:
            show_trigger(show, tz)
    except ValidationFailed as e:
        return Refused(tuple(e.diagnostics), len(e.errors) or len(e.diagnostics), None,
                       os.getpid())
    except (RunnerError, OSError) as e:  # ShowError included
        return Refused((), 0, str(e), os.getpid())
    packed = tuple(
        (pickle.dumps(dataclasses.replace(scene, actions=())),
         tuple(pickle.dumps(scene.actions[i:i + CHUNK])
               for i in range(0, len(scene.actions), CHUNK)))
        for scene in scenes.values())
    return Loaded(dataclasses.replace(new, devices=dict(new.devices)), packed, os.getpid())


def _child_setup() -> None:
    # `runner serve` blocks its signals for sigwait(); a child inherits that mask. It
    # must die with the service (SIGTERM) and leave Ctrl-C to the service.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGHUP})
    with contextlib.suppress(OSError):
        os.nice(CHILD_NICENESS)


def load_elsewhere(path: Path, timeout: float = LOAD_TIMEOUT) -> Loaded | Refused:
    """`load(path)` in a fresh child process; the caller only waits (without the GIL)."""
    # spawn, not fork: the service has threads (paho, player) whose locks a fork copies.
    context = multiprocessing.get_context("spawn")
    # Starting multiprocessing's resource tracker unblocks SIGINT and SIGTERM in the
    # calling thread (CPython's resource_tracker.ensure_running): `runner serve` would
    # then die of a plain SIGTERM instead of stopping the room. Put the mask back.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, ())
    pool = ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_child_setup)
    try:
        future = pool.submit(load, path)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        return future.result(timeout=timeout)
    except FutureTimeout:
        return Refused((), 0, f"reading it took longer than {timeout:.0f} s", os.getpid())
    except BrokenProcessPool as e:
        return Refused((), 0, f"the process reading it ended unexpectedly ({e})", os.getpid())
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        pool.shutdown(wait=False, cancel_futures=True)
