"""Daily shows in the room service: on time through an injected clock, skipped when not ready."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from runner.configfile import load_config
from runner.service import RoomService
from tests.brokers import Mosquitto
from tests.conftest import Recorder, wait_until
from tests.test_service import INTRO, QUICK
from tests.test_shows import FakeWallClock

UTC = ZoneInfo("UTC")
TEN = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


def write_room(root: Path, broker: Mosquitto, shows: str, extra: str = "") -> Path:
    (root / "scenes").mkdir(parents=True, exist_ok=True)
    (root / "scenes" / "intro.yaml").write_text(INTRO)
    (root / "scenes" / "quick.yaml").write_text(QUICK)
    (root / "runner.yaml").write_text(
        "room: room1\n"
        f"broker: {{host: 127.0.0.1, port: {broker.port}}}\n"
        "scenes_dir: scenes\n"
        "timezone: UTC\n"
        "dashboard: {enabled: false}\n"
        f"shows:\n{shows}"
        f"{extra}"
    )
    return root / "runner.yaml"


@pytest.fixture
def services() -> Iterator[list[RoomService]]:
    made: list[RoomService] = []
    yield made
    for s in made:
        s.shutdown()


def start_service(config: Path, clock: FakeWallClock, made: list[RoomService],
                  recorder: Recorder) -> RoomService:
    service = RoomService(load_config(config), now=clock, show_tick=0.05, dummy_media=True)
    made.append(service)
    service.start()
    recorder.wait_for("runner/room1/status", "online")  # connected and subscribed
    return service


def test_a_show_due_two_seconds_after_start_runs_on_time(
        tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder,
        services: list[RoomService]) -> None:
    config = write_room(tmp_path, mosquitto, '  - {scene: quick, time: "10:00"}\n')
    clock = FakeWallClock(datetime(2026, 11, 30, 9, 59, 58, tzinfo=UTC))
    service = start_service(config, clock, services, recorder)
    assert service.next_shows()[0][1] == TEN
    [msg] = recorder.wait_for("room1/fog", "ON", timeout=10)
    assert clock() >= TEN  # not before its time
    wait_until(lambda: service.player.current_run is None, what="quick ended")
    [run] = service.history.last_runs()
    assert run["trigger"] == "show:10:00 every day"
    assert run["scene"] == "quick" and run["outcome"] == "completed"
    assert service.next_shows()[0][1] == datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    assert msg.payload == b"ON"


def test_a_show_that_requires_its_devices_is_skipped_when_one_is_offline(
        tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder,
        services: list[RoomService], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    recorder.client.publish("devices/esp32_01/status", "offline", qos=1,
                            retain=True).wait_for_publish(5)
    config = write_room(
        tmp_path, mosquitto, '  - {scene: quick, time: "10:00", require_devices: true}\n',
        extra="devices:\n  esp32_01: [room1/fog]\n")
    clock = FakeWallClock(datetime(2026, 11, 30, 9, 59, 58, tzinfo=UTC))
    service = start_service(config, clock, services, recorder)
    wait_until(lambda: "esp32_01" in service.registry.get_all_devices(), what="presence")
    wait_until(lambda: "skipped" in caplog.text, timeout=10, what="the skip line")
    assert "requires its devices and esp32_01 is not online" in caplog.text
    with pytest.raises(AssertionError):
        recorder.wait_for("room1/fog", "ON", timeout=1.0)
    assert service.history.last_runs() == []


def test_a_show_while_a_single_mode_scene_runs_is_skipped_not_played_late(
        tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder,
        services: list[RoomService], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    config = write_room(tmp_path, mosquitto, '  - {scene: quick, cron: "0 10 * * 1"}\n')
    clock = FakeWallClock(datetime(2026, 11, 30, 9, 59, 59, tzinfo=UTC))
    service = start_service(config, clock, services, recorder)
    assert service.play("intro", "manual") is not None  # 1.5 s long, mode single
    wait_until(lambda: "Show quick skipped" in caplog.text, timeout=10, what="skip line")
    assert "another scene is still running" in caplog.text
    wait_until(lambda: service.player.current_run is None, timeout=10, what="intro ended")
    with pytest.raises(AssertionError):  # never played late once the room is free
        recorder.wait_for("room1/fog", "ON", timeout=1.0)


def test_a_show_of_a_queue_mode_scene_is_not_queued_to_start_late(
        tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder,
        services: list[RoomService], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    config = write_room(tmp_path, mosquitto, '  - {scene: queued, time: "10:00"}\n')
    (tmp_path / "scenes" / "queued.yaml").write_text(
        "name: Queued\nmode: queue\nactions:\n"
        "  - {at: 0, topic: room1/fog, message: \"ON\", feedback: none}\n")
    clock = FakeWallClock(datetime(2026, 11, 30, 9, 59, 59, tzinfo=UTC))
    service = start_service(config, clock, services, recorder)
    assert service.play("intro", "manual") is not None
    wait_until(lambda: "Show queued skipped" in caplog.text, timeout=10, what="skip line")
    assert "never queued to start late" in caplog.text
    wait_until(lambda: service.player.current_run is None, timeout=10, what="intro ended")
    with pytest.raises(AssertionError):
        recorder.wait_for("room1/fog", "ON", timeout=1.0)
