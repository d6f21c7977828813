"""`runner simulate`: virtual ESP32s that answer commands until Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Mapping

from runner.cli import EXIT_ERROR, EXIT_OK, EXIT_USAGE
from runner.commands._common import config_from_args
from runner.errors import RunnerError
from runner.model import Config
from runner.scenefile import load_scenes
from runner.simulate import (
    Answer,
    DeviceFleet,
    Flakiness,
    devices_for_topics,
    parse_device,
    parse_latency,
)

log = logging.getLogger("simulate")

ONLINE_WAIT = 10.0  # seconds to wait before saying which devices are not up yet


def _devices_from_flags(specs: list[str]) -> dict[str, tuple[str, ...]]:
    devices: dict[str, tuple[str, ...]] = {}
    for spec in specs:
        device_id, topics = parse_device(spec)
        if device_id in devices:
            raise ValueError(f"device {device_id!r} is given twice: one --device per device")
        devices[device_id] = topics
    return devices


def _devices_from_scenes(config: Config) -> dict[str, tuple[str, ...]]:
    """Without a `devices` map: one device per command topic of the room's scenes."""
    if not config.scenes_dir.is_dir():
        return {}
    scenes = load_scenes(config.scenes_dir, default_room=config.room, media_dir=config.media_dir)
    topics = [
        a.topic
        for scene in scenes.values()
        for a in (*scene.actions, *scene.on_stop)
        if not a.is_media
    ]
    topics += [a.topic for a in config.safe_state if not a.is_media]
    return devices_for_topics(sorted(set(topics)))


def _print_answer(a: Answer) -> None:
    mark = "✅" if a.status == "OK" else "❌"
    log.info("%s %s: %s = %s -> %s on %s (%.3fs)",
             mark, a.device, a.topic, a.message, a.status, a.feedback_topic, a.latency)


def _describe(devices: Mapping[str, tuple[str, ...]]) -> str:
    return "\n".join(f"  {d}: {', '.join(t)}" for d, t in devices.items())


def _wait_online(fleet: DeviceFleet, stop: threading.Event) -> bool:
    # Short waits, so that a Ctrl-C right after the start is not kept waiting.
    deadline = time.monotonic() + ONLINE_WAIT
    while not stop.is_set() and time.monotonic() < deadline:
        if fleet.wait_online(0.2):
            return True
    return False


def run(args: argparse.Namespace) -> int:
    try:
        latency = parse_latency(args.latency)
        if not 0.0 <= args.error_rate <= 1.0:
            raise ValueError(f"--error-rate {args.error_rate} must be between 0 and 1, e.g. 0.1")
        devices = _devices_from_flags(args.device)
    except ValueError as exc:
        print(f"runner simulate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        config = config_from_args(args)
        source = "--device"
        if not devices:
            devices, source = dict(config.devices), "the config's devices"
        if not devices:
            devices, source = _devices_from_scenes(config), f"the scenes in {config.scenes_dir}"
    except RunnerError as exc:
        print(exc, file=sys.stderr)
        return EXIT_ERROR
    if not devices:
        print("runner simulate: no devices to simulate: give --device ID:TOPIC[,TOPIC...] "
              "or a config with a `devices` map", file=sys.stderr)
        return EXIT_USAGE

    broker = config.broker
    fleet = DeviceFleet.from_map(
        devices, broker.host, broker.port,
        latency=latency, error_rate=args.error_rate,
        flaky=Flakiness() if args.flaky else None,
        username=broker.username, password=broker.password, tls=broker.tls,
        on_answer=_print_answer,
    )
    stop = threading.Event()

    def handle(sig: int, _frame: object) -> None:
        stop.set()
        if sig == signal.SIGINT:  # a second Ctrl-C gives up waiting for the clean stop
            signal.signal(signal.SIGINT, signal.default_int_handler)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handle)

    low, high = latency
    spread = f"{low:g}s" if low == high else f"{low:g}-{high:g}s"
    print(f"Simulating {len(devices)} device(s) from {source} on {broker.host}:{broker.port} "
          f"(latency {spread}, error rate {args.error_rate:g}"
          f"{', flaky' if args.flaky else ''}); Ctrl-C stops.", flush=True)
    print(_describe(devices), flush=True)
    fleet.start()
    if _wait_online(fleet, stop):
        print(f"All {len(devices)} device(s) online.", flush=True)
    elif not stop.is_set():
        missing = sorted(set(devices) - set(fleet.online()))
        print(f"Not online yet (is the broker at {broker.host}:{broker.port} up?): "
              f"{', '.join(missing)}; they keep trying.", flush=True)
    stop.wait()
    print("Stopping: every device says offline.", flush=True)
    fleet.stop()
    return EXIT_OK
