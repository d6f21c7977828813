"""`runner devices`: connect briefly and list the devices seen on the broker (retained presence)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from datetime import datetime
from typing import Any

from runner.cli import EXIT_ERROR, EXIT_OK
from runner.commands._common import config_from_args
from runner.model import Config

HEADER = ("DEVICE", "STATUS", "LAST SEEN", "TOPICS")


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    # paho only for this command
    from runner.mqtt.stack import ClientSetup, build_mqtt_stack  # noqa: PLC0415

    room_state: dict[str, Any] = {}

    def on_state(_topic: str, text: str) -> None:
        try:
            doc = json.loads(text)
        except ValueError:
            return
        if isinstance(doc, dict) and isinstance(doc.get("devices"), dict):
            room_state.update(doc["devices"])

    # Presence and the service's retained state; no feedback: this look sends nothing.
    mqtt = build_mqtt_stack(
        config, {}, client=ClientSetup.for_a_look(config, f"runner-devices-{os.getpid()}"),
        feedback=False, routes=[(config.runner_state_topic, on_state)])
    client = mqtt.client
    try:
        if not client.connect():
            print(unreachable_message(config, client.address, client.last_error),
                  file=sys.stderr)
            return EXIT_ERROR
        threading.Event().wait(max(0.0, args.wait))  # retained messages arrive meanwhile
    finally:
        mqtt.close()
    print_devices(config, mqtt.registry.get_all_devices(), room_state, client.address,
                  args.wait)
    return EXIT_OK


def unreachable_message(config: Config, address: str, why: str) -> str:
    """The broker is not reachable: say so, why, and what to check."""
    because = f" ({why})" if why else ""
    if config.source:
        check = (f"and that broker.host/port in {config.source} name it (or pass "
                 "--broker HOST:PORT)")
    else:
        check = ("or name the room's broker with --broker HOST:PORT or --config FILE (there "
                 "is no ./runner.yaml here)")
    return (f"runner devices: the MQTT broker at {address} is not reachable{because}. "
            f"Check that the broker (mosquitto) runs there, {check}.")


def print_devices(config: Config, seen: dict[str, Any], room_state: dict[str, Any],
                  address: str, wait: float) -> None:
    ids = sorted(set(seen) | set(config.devices))
    if not ids:
        print(f"No devices seen on {address} within {wait:g} s, and none configured "
              f"under `devices:`. Devices announce themselves on "
              f"{', '.join(config.status_topics)} (retained online/offline).")
        return
    print(f"Devices on {address} (retained presence, {wait:g} s):")
    rows = []
    for device_id in ids:
        info = seen.get(device_id)
        status = "never seen" if info is None else ("online" if info.online else "offline")
        last_seen = room_state.get(device_id, {}).get("last_seen") if isinstance(
            room_state.get(device_id), dict) else None
        if last_seen is None and info is not None and info.online:
            last_seen = datetime.fromtimestamp(info.last_seen).astimezone().isoformat(
                timespec="seconds")
        rows.append((device_id, status, last_seen or "-",
                     ", ".join(config.devices.get(device_id, ())) or "-"))
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    for r in [HEADER, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    if not room_state:
        print("(last seen of offline devices is known only while `runner serve` runs)")
