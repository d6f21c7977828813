"""The 20-second soak: `runner serve` under broker kills, device drops, junk and reloads."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import weakref
from pathlib import Path

from runner.configfile import load_config
from runner.simulate import DeviceFleet, VirtualDevice
from tests.brokers import Mosquitto, find_mosquitto
from tests.conftest import REPO, require, wait_until

DURATION = 20


def test_twenty_seconds_of_chaos_lose_nothing_and_send_nothing_late(tmp_path: Path) -> None:
    require("mosquitto", find_mosquitto() is not None, "apt-get install mosquitto")
    out = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "soak.py"), "--duration", str(DURATION),
         "--show-interval", "3.5", "--json", str(out)],
        check=False, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert out.exists(), f"no report:\n{done.stdout}\n{done.stderr}"
    report = json.loads(out.read_text())
    context = f"\n{done.stdout}\n{done.stderr}"

    # The chaos really happened ...
    assert report["broker_flaps"] == 1, context
    assert report["presence_bursts"] == 1, context
    assert report["junk_messages"] > 100, context
    assert report["device_drops"] >= 3, context
    assert report["reloads_logged"] >= 1, context
    assert report["scenes_played"] >= 2, context  # a start falls into the broker's outage
    assert report["commands_on_time"] >= 40, context
    # ... and the room held.
    assert report["commands_late"] == 0, context
    assert report["commands_lost_while_up"] == 0, context
    assert report["service_restarts"] == 0 and report["service_exit"] == 0, context
    assert report["tracebacks_in_log"] == 0, context
    assert report["reconnect_s"]["max"] is not None, context
    assert report["registry_right_after_flaps"] == 1, report["registry_mismatch"]
    assert report["bursts_right"] == 1, context
    assert report["registry_right_at_end"], report["registry_mismatch_at_end"]
    assert report["fds"]["end"] <= report["fds"]["start"] + 5, context
    assert report["threads"]["end"] <= report["threads"]["start"] + 3, context
    assert done.returncode == 0, context


def test_a_device_that_loses_power_while_the_broker_is_down_is_not_shown_online(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    # Found by the soak: no last will can fire for a device that dies with the broker,
    # and a restarted broker has no retained `offline` for it either.
    from runner.service import RoomService  # noqa: PLC0415 - paho and vlc for this test only

    (tmp_path / "scenes").mkdir()
    (tmp_path / "scenes" / "s.yaml").write_text(
        "name: S\nactions:\n  - {at: 0, topic: room1/a, message: 'ON'}\n")
    config = tmp_path / "runner.yaml"
    config.write_text(
        "room: room1\n"
        f"broker: {{host: 127.0.0.1, port: {mosquitto.port}, connect_retries: 1, "
        "retry_delay: 0.2}\n"
        "scenes_dir: scenes\ndashboard: {enabled: false}\n")
    room = RoomService(load_config(config), dummy_media=True)
    stays, dies = (DeviceFleet([VirtualDevice(d, (f"room1/{d}",), mosquitto.host, mosquitto.port)])
                   for d in ("stays", "dies"))
    try:
        room.start()
        stays.start()
        dies.start()
        wait_until(lambda: room.registry.get_connected_devices() == ["dies", "stays"],
                   what="both devices online")
        mosquitto.kill()
        dies.stop(timeout=0.5)  # its power is cut while the broker is down
        mosquitto.start()
        wait_until(lambda: room.client.connected, timeout=10, what="the runner reconnected")
        wait_until(lambda: room.registry.get_connected_devices() == ["stays"], timeout=10,
                   what=f"only 'stays' online: {room.registry.get_all_devices()}")
        assert room.registry.get_all_devices()["dies"].online is False
    finally:
        room.shutdown()
        stays.stop()
        dies.stop()


def test_a_reload_lets_the_replaced_player_go(tmp_path: Path, mosquitto: Mosquitto) -> None:
    # Found by the soak: memory grew with every SIGHUP, because each replaced player
    # stayed alive through the shared media backend's listeners (with its scheduler,
    # its config and its runs).
    from runner.service import RoomService  # noqa: PLC0415 - paho and vlc for this test only

    (tmp_path / "scenes").mkdir()
    (tmp_path / "scenes" / "s.yaml").write_text(
        "name: S\nactions:\n  - {at: 0, topic: room1/a, message: 'ON'}\n")
    config = tmp_path / "runner.yaml"
    config.write_text(
        f"room: room1\nbroker: {{host: 127.0.0.1, port: {mosquitto.port}}}\n"
        "scenes_dir: scenes\ndashboard: {enabled: false}\n")
    room = RoomService(load_config(config), dummy_media=True)
    try:
        room.start()
        replaced = []
        for _ in range(3):
            replaced.append(weakref.ref(room.player))
            assert room.reload(config)
        gc.collect()
        alive = [p for p in replaced if p() is not None]
        assert alive == [], f"{len(alive)} replaced player(s) still alive: " \
            f"{[type(r).__name__ for r in gc.get_referrers(alive[0]())]}"
    finally:
        room.shutdown()
