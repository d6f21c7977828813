"""Sizes with N retained foreign devices on the broker: registry, retained room state,
dashboard snapshot, and whether the runner stayed connected.

    .venv/bin/python bench/state_size.py LABEL [--devices 5000]

For a baseline, run it on an older checkout of runner/ (`git checkout <commit> -- runner/`,
then `git checkout HEAD -- runner/`) in the same session.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from runner.configfile import load_config
from runner.service import RoomService
from runner.web import views
from tests.brokers import Mosquitto

SETTLE = 5.0  # the retained burst arriving; a coarse wait is enough for a size figure


def flood(broker: Mosquitto, n: int) -> None:
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-flood")
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    infos = [pub.publish(f"devices/fake{i:05d}/status", "online", qos=1, retain=True)
             for i in range(n)]
    for info in infos:
        info.wait_for_publish(30)
    pub.disconnect()
    pub.loop_stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("label")
    ap.add_argument("--devices", type=int, default=5000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        broker = Mosquitto(root / "broker", extra_conf="max_queued_messages 20000").start()
        flood(broker, args.devices)
        config = root / "runner.yaml"
        config.write_text(f"room: room1\nbroker: {{host: 127.0.0.1, port: {broker.port}}}\n"
                          "dashboard: {enabled: false}\ndevices: {esp32_01: [room1/light]}\n")
        (root / "scenes").mkdir()
        room = RoomService(load_config(config), dummy_media=True,
                           history_path=root / "history.sqlite3")
        room.start()
        try:
            time.sleep(SETTLE)
            state = json.dumps(room.state_snapshot(), separators=(",", ":"))
            snap = json.dumps(views.snapshot(room, timezone.utc, views.FailureClock()))
            print(f"{args.label}: registry {len(room.registry.get_all_devices())}, "
                  f"state {len(state)} bytes, snapshot {len(snap)} bytes, "
                  f"reconnects {room.client.health().reconnects}")
        finally:
            room.shutdown()
            broker.kill()


if __name__ == "__main__":
    main()
