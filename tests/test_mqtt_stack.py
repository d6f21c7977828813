"""One MQTT stack for every command: serve and play listen on the same topics.

`runner serve` once built its own handler and never subscribed the scenes'
`feedback_topic` overrides that `runner play` did: answers there were lost in serve.
"""

from __future__ import annotations

from pathlib import Path

from runner.commands import play
from runner.configfile import load_config
from runner.model import Config
from runner.mqtt.stack import ClientSetup, MqttStack, build_mqtt_stack
from runner.records import FeedbackResult, FeedbackStatus
from runner.service import RoomService
from tests.brokers import Mosquitto
from tests.conftest import wait_until
from tests.mqtt_support import Device

DOOR = """\
name: Door with its own answer topic
actions:
  - {at: 0, topic: room1/door, message: OPEN, feedback_topic: room1/door/ack}
"""


def write_room(root: Path, broker: Mosquitto) -> Config:
    (root / "scenes").mkdir()
    (root / "scenes" / "door.yaml").write_text(DOOR)
    path = root / "runner.yaml"
    path.write_text(
        "room: room1\n"
        f"broker: {{host: {broker.host}, port: {broker.port}, connect_retries: 1}}\n"
        "scenes_dir: scenes\n"
        "timezone: UTC\n"
        "dashboard: {enabled: false}\n"
        "registry: {status_topics: [devices/+/status, esp/+/presence]}\n"
        "triggers:\n  - {topic: room1/button, scene: door}\n")
    return load_config(path)


def answer_reaches_tracker(stack: MqttStack, device: Device) -> None:
    """`OK` on room1/door/ack, sent by a device, confirms a pending room1/door command."""
    results: list[FeedbackResult] = []
    stack.tracker.enable_feedback_tracking()
    stack.tracker.track_published_message("room1/door", "OPEN", timeout=10.0,
                                          feedback_topic="room1/door/ack",
                                          on_result=results.append)
    device.send("room1/door/ack", "OK")
    wait_until(lambda: results, timeout=10, what="the answer on room1/door/ack")
    assert results[0].status is FeedbackStatus.OK, results


def test_serve_and_play_subscribe_the_same_presence_and_feedback_topics(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    config = write_room(tmp_path, mosquitto)
    device = Device(mosquitto)
    expected = ("devices/+/status", "esp/+/presence", "+/status", "room1/door/ack")
    service = RoomService(config, dummy_media=True, history_path=tmp_path / "h.sqlite3")
    try:
        assert service.mqtt.subscriptions == expected
        service.start()
        assert service.client.connected
        # serve adds its trigger and command topics, after the same ones as play's.
        after_start: tuple[str, ...] = service.mqtt.subscriptions  # read again, not narrowed
        assert after_start == (*expected, "room1/button", "runner/room1/cmd")
        # At the broker: an answer on the override reaches the tracker.
        answer_reaches_tracker(service.mqtt, device)
    finally:
        service.shutdown()  # before play: both use the room's client id
    played = play.mqtt_for(config, service.scenes["door"])
    try:
        assert played.subscriptions == expected
        assert played.client.connect()
        answer_reaches_tracker(played, device)
    finally:
        played.close()
        device.close()


def test_a_look_at_the_broker_listens_to_presence_only_and_never_simulates(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    """`runner devices`: its own client id, one attempt, no feedback topics, no presence."""
    config = write_room(tmp_path, mosquitto)
    setup = ClientSetup.for_a_look(config, "runner-devices-1")
    assert (setup.client_id, setup.connect_retries, setup.fallback, setup.presence_topic) == (
        "runner-devices-1", 1, False, None)
    stack = build_mqtt_stack(config, {}, client=setup, feedback=False,
                             routes=[("runner/room1/state", lambda _t, _x: None)])
    try:
        assert stack.subscriptions == ("devices/+/status", "esp/+/presence",
                                       "runner/room1/state")
    finally:
        stack.close()
