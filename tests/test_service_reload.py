"""Reloading the room service's config in place: new triggers, shows and safe state apply."""

from __future__ import annotations

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


def write_config(root: Path, broker: Mosquitto, body: str) -> Path:
    (root / "scenes").mkdir(parents=True, exist_ok=True)
    (root / "scenes" / "intro.yaml").write_text(INTRO)
    (root / "scenes" / "quick.yaml").write_text(QUICK)
    path = root / "runner.yaml"
    path.write_text(
        "room: room1\n"
        f"broker: {{host: 127.0.0.1, port: {broker.port}}}\n"
        "scenes_dir: scenes\n"
        "timezone: UTC\n"
        "dashboard: {enabled: false}\n" + body)
    return path


@pytest.fixture
def service(tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder) -> Iterator[RoomService]:
    config = write_config(tmp_path, mosquitto, (
        "triggers:\n  - {topic: room1/button, scene: intro}\n"
        "safe_state:\n  - {topic: room1/steam, message: \"OFF\"}\n"))
    clock = FakeWallClock(datetime(2026, 11, 30, 9, 59, 55, tzinfo=UTC))
    room = RoomService(load_config(config), now=clock, show_tick=0.05, dummy_media=True)
    room.start()
    # `online` follows the subscriptions on the same connection: once the broker passed
    # it on, the trigger and command topics are subscribed.
    recorder.wait_for("runner/room1/status", "online")
    yield room
    room.shutdown()


def wait_for_quietly(recorder: Recorder, topic: str, payload: str, timeout: float) -> bool:
    try:
        recorder.wait_for(topic, payload, timeout=timeout)
    except AssertionError:
        return False
    return True


def _send(recorder: Recorder, topic: str, payload: str) -> None:
    recorder.client.publish(topic, payload, qos=1).wait_for_publish(5)


def test_reload_applies_new_triggers_and_shows_without_reconnecting(
        tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder,
        service: RoomService) -> None:
    reconnects = service.client.health().reconnects
    assert service.next_shows() == []
    path = write_config(tmp_path, mosquitto, (
        "triggers:\n  - {topic: room1/knob/+, message: TURNED, scene: quick}\n"
        "shows:\n  - {scene: quick, time: \"10:00\"}\n"))
    assert service.reload(path) is True
    assert service.next_shows()[0][1] == datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    # New trigger, wildcard topic. Its subscription went out just now on the service's
    # connection; a turn that reaches the broker before it is lost, so turn until heard.
    for _ in range(20):
        _send(recorder, "room1/knob/left", "TURNED")
        if wait_for_quietly(recorder, "room1/fog", "ON", timeout=0.25):
            break
    recorder.wait_for("room1/fog", "ON")
    _send(recorder, "room1/button", "PRESSED")  # the old trigger is gone
    with pytest.raises(AssertionError):
        recorder.wait_for("room1/light", "ON", timeout=1.0)
    recorder.wait_for("room1/fog", "ON", count=2, timeout=15)  # the new 10:00 show
    runs = service.history.last_runs()
    assert [r["trigger"] for r in runs] == ["show:10:00 every day", "trigger:room1/knob/+"]
    assert service.client.health().reconnects == reconnects


def test_a_reload_during_a_scene_applies_the_new_safe_state_when_it_ends(
        tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder,
        service: RoomService) -> None:
    assert service.play("intro", "manual") is not None
    playing = service.player
    path = write_config(tmp_path, mosquitto,
                        "safe_state:\n  - {topic: room1/smoke, message: \"OFF\"}\n")
    assert service.reload(path) is True
    recorder.wait_for("room1/motor", "START")  # the running scene goes on to its end
    wait_until(lambda: service.player.current_run is None, timeout=10, what="intro ended")
    wait_until(lambda: service.player is not playing, what="player rebuilt with the new config")
    service.panic()
    recorder.wait_for("room1/smoke", "OFF")
    assert recorder.payloads("room1/steam") == []


def test_an_invalid_reload_is_refused_and_the_old_config_kept(
        tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder, service: RoomService,
        caplog: pytest.LogCaptureFixture) -> None:
    before = service.config
    path = tmp_path / "runner.yaml"
    path.write_text(path.read_text() + "shows:\n  - {scene: nope, time: \"25:00\"}\n")
    assert service.reload(path) is False
    assert service.config is before
    assert f"{path}:" in caplog.text and "Reload refused" in caplog.text
    _send(recorder, "room1/button", "PRESSED")
    recorder.wait_for("room1/light", "ON")


def test_a_reload_does_not_replay_retained_presence_as_if_devices_just_reported(
        tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder,
        service: RoomService) -> None:
    # Subscribing again to the status topics would have the broker send every retained
    # `online` anew, and each device's "last seen" would jump to the reload.
    recorder.client.publish("devices/esp32_01/status", "online", qos=1,
                            retain=True).wait_for_publish(5)
    wait_until(lambda: "esp32_01" in service.registry.get_all_devices(), what="device seen")
    seen = service.registry.get_all_devices()["esp32_01"].last_seen
    path = write_config(tmp_path, mosquitto,
                        "triggers:\n  - {topic: room1/knob, scene: quick}\n")
    assert service.reload(path) is True
    with pytest.raises(AssertionError):
        wait_until(lambda: service.registry.get_all_devices()["esp32_01"].last_seen != seen,
                   timeout=1.5, what="last seen moved")
    for _ in range(20):  # the new trigger's topic is subscribed (turn until heard)
        _send(recorder, "room1/knob", "TURNED")
        if wait_for_quietly(recorder, "room1/fog", "ON", timeout=0.25):
            break
    recorder.wait_for("room1/fog", "ON")


def test_a_reload_keeps_the_device_map_the_tracker_was_built_with_and_says_so(
        tmp_path: Path, mosquitto: Mosquitto, service: RoomService,
        caplog: pytest.LogCaptureFixture) -> None:
    before = service.config.devices
    path = write_config(tmp_path, mosquitto, "devices:\n  esp32_05: [room1/light]\n")
    assert service.reload(path) is True
    assert service.config.devices == before  # readiness and confirmations agree
    assert "apply at the next restart" in caplog.text and "`devices`" in caplog.text


def test_a_refused_reload_names_the_scene_file_at_fault(
        tmp_path: Path, service: RoomService, caplog: pytest.LogCaptureFixture) -> None:
    bad = tmp_path / "scenes" / "broken.yaml"
    bad.write_text("name: Broken\nactions: [\n")
    assert service.reload(tmp_path / "runner.yaml") is False
    assert f"{bad}:" in caplog.text
    assert "or its scenes" in caplog.text  # not blamed on runner.yaml alone


ACK_SCENE = """\
name: Door with its own answer topic
actions:
  - {at: 0, topic: room1/door, message: OPEN, feedback_topic: room1/door/ack}
"""


def test_a_reload_subscribes_the_feedback_topics_its_new_scenes_name(
        tmp_path: Path, recorder: Recorder, service: RoomService) -> None:
    """An answer on a scene's own `feedback_topic` reaches the tracker, reload after reload."""
    for name in ("door", "gate"):
        (tmp_path / "scenes" / f"{name}.yaml").write_text(
            ACK_SCENE.replace("room1/door/ack", f"room1/{name}/ack"))
        assert service.reload(tmp_path / "runner.yaml")
        recorder.clear()
        service.play(name, "test")
        recorder.wait_for("room1/door", "OPEN")
        _send(recorder, f"room1/{name}/ack", "OK")
        wait_until(lambda: service.player.current_run is None, timeout=5, what=f"{name} ended")
        [run] = [r for r in service.history.last_runs() if r["scene"] == name]
        assert run["outcome"] == "completed", run  # TIMEOUT when the answer never arrives


def big_scene(actions: int) -> str:
    lines = ["name: Big", "actions:"]
    lines += [f"  - {{at: {i * 0.01:.2f}, topic: room1/light, message: L{i}, feedback: none}}"
              for i in range(actions)]
    return "\n".join(lines) + "\n"


def test_a_big_scene_is_read_and_checked_in_another_process_while_a_scene_plays(
        tmp_path: Path, recorder: Recorder, service: RoomService) -> None:
    """Parsing 20,000 actions in the service's process held the GIL and made cues late."""
    import os  # noqa: PLC0415
    (tmp_path / "scenes" / "big.yaml").write_text(big_scene(20_000))
    assert service.play("intro", "manual") is not None
    assert service.reload(tmp_path / "runner.yaml") is True
    assert service.last_reload_pid is not None and service.last_reload_pid != os.getpid()
    assert len(service.scenes["big"].actions) == 20_000
    recorder.wait_for("room1/motor", "START")  # the playing scene went on


def test_a_reload_refused_by_the_child_still_names_the_file(
        tmp_path: Path, service: RoomService, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "runner.yaml").write_text("room: room1\nbroker: {port: 99999}\n")
    assert service.reload(tmp_path / "runner.yaml") is False
    assert f"{tmp_path / 'runner.yaml'}:" in caplog.text and "Reload refused" in caplog.text
