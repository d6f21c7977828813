"""`runner play` as a subprocess against a real mosquitto: report, exit status, signals."""

from __future__ import annotations

import json
import queue
import signal
import textwrap
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.brokers import Mosquitto
from tests.conftest import Recorder, run_runner, spawn_runner, wait_until
from tests.mqtt_support import Device


def room(tmp_path: Path, broker: Mosquitto, scene_yaml: str, name: str = "show") -> Path:
    """A room folder with runner.yaml and scenes/<name>.yaml; returns the config path."""
    (tmp_path / "scenes").mkdir(exist_ok=True)
    (tmp_path / "media").mkdir(exist_ok=True)
    (tmp_path / "scenes" / f"{name}.yaml").write_text(textwrap.dedent(scene_yaml))
    config = tmp_path / "runner.yaml"
    config.write_text(textwrap.dedent(f"""\
        room: room1
        broker: {{host: {broker.host}, port: {broker.port}, connect_retries: 1,
                  retry_delay: 0.2}}
        scenes_dir: scenes
        media_dir: media
        feedback: {{timeout: 0.3}}
        safe_state:
          - {{topic: room1/fog, message: "OFF"}}
        """))
    return config


def test_play_sends_unquoted_on_as_on_and_writes_the_report(
        tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder) -> None:
    config = room(tmp_path, mosquitto, """\
        name: Lights
        actions:
          - {at: 0, topic: room1/light, message: ON, feedback: none}
          - {at: 0.2, topic: room1/door, message: off, feedback: none}
          - {at: "0:00.4", topic: room1/light, message: yes, feedback: none, label: Done}
        """)
    report = tmp_path / "report.json"
    result = run_runner("play", "show", "--config", str(config), "--report", str(report))
    assert result.returncode == 0, result.stderr
    assert recorder.payloads("room1/light") == ["ON", "yes"]
    assert recorder.payloads("room1/door") == ["off"]
    data = json.loads(report.read_text())
    assert data["scene"] == "show" and data["outcome"] == "completed"
    assert [r["message"] for r in data["records"]] == ["ON", "off", "yes"]
    assert all(r["delivery"] == "sent" and abs(r["lateness"]) < 0.05 for r in data["records"])
    # Not a terminal: one line per cue, then the table with its summary.
    assert "room1/light = ON  sent" in result.stdout
    assert "show: completed; 3 of 3 cue(s) fired" in result.stdout
    assert "Traceback" not in result.stderr


def test_unconfirmed_feedback_exits_3(tmp_path: Path, mosquitto: Mosquitto,
                                      recorder: Recorder) -> None:
    config = room(tmp_path, mosquitto, """\
        name: Unanswered
        actions:
          - {at: 0, topic: room1/steam, message: "ON"}
        """)
    result = run_runner("play", "show", "--config", str(config))
    assert result.returncode == 3, result.stderr
    assert "TIMEOUT" in result.stdout
    assert "Feedback TIMEOUT: room1/steam" in result.stderr


def test_feedback_on_its_own_topic_is_heard(tmp_path: Path, mosquitto: Mosquitto) -> None:
    # `feedback_topic: room1/door/ack` is outside `+/status`: it was never subscribed,
    # so every answer there timed out.
    config = room(tmp_path, mosquitto, """\
        name: Door
        actions:
          - {at: 0, topic: room1/door, message: UNLOCK, feedback_topic: room1/door/ack}
        """)
    device = Device(mosquitto)
    try:
        device.answer("room1/door", "OK", reply_topic="room1/door/ack")
        result = run_runner("play", "show", "--config", str(config))
    finally:
        device.close()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Feedback OK: room1/door" in result.stderr


def test_qos_and_retain_are_published_as_written(tmp_path: Path, mosquitto: Mosquitto) -> None:
    config = room(tmp_path, mosquitto, """\
        name: Sign
        actions:
          - {at: 0, topic: room1/sign, message: OPEN, qos: 2, retain: true, feedback: none}
          - {at: 0, topic: room1/door, message: SHUT, qos: 0, feedback: none}
        """)
    assert run_runner("play", "show", "--config", str(config)).returncode == 0
    # A subscriber arriving later gets the retained command, at the QoS it was sent with.
    got: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    late = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="late-subscriber")
    late.on_connect = lambda c, *_: c.subscribe("room1/#", qos=2)
    late.on_message = lambda _c, _u, msg: got.put(msg)
    late.connect(mosquitto.host, mosquitto.port)
    late.loop_start()
    try:
        msg = got.get(timeout=5)
    finally:
        late.disconnect()
        late.loop_stop()
    assert (msg.topic, msg.payload, msg.retain, msg.qos) == ("room1/sign", b"OPEN", True, 2)
    assert got.empty()  # room1/door was not retained


def test_a_start_names_the_devices_it_needs_that_are_not_online(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    config = room(tmp_path, mosquitto, """\
        name: Two devices
        actions:
          - {at: 0, topic: room1/light, message: ON, feedback: none}
          - {at: 0, topic: room1/steam, message: "ON", feedback: none}
        """)
    config.write_text(config.read_text() + "devices:\n  esp32_01: [room1/light]\n"
                      "  esp32_02: [room1/steam]\n  esp32_03: [room1/other]\n")
    device = Device(mosquitto, "esp32_01")
    try:
        device.online()
        result = run_runner("play", "show", "--config", str(config))
    finally:
        device.close()
    assert result.returncode == 0, result.stderr
    assert "show needs device(s) that are not online: esp32_02 (never seen);" in result.stderr


def test_simulate_publishes_nothing(tmp_path: Path, mosquitto: Mosquitto,
                                    recorder: Recorder) -> None:
    config = room(tmp_path, mosquitto, """\
        name: Dry run
        actions:
          - {at: 0, topic: room1/steam, message: "ON"}
          - {at: 0.1, topic: room1/light, message: ON}
        """)
    result = run_runner("play", "show", "--config", str(config), "--simulate")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("simulated") >= 2
    assert [m for m in recorder.messages if m.topic.startswith("room1/")] == []


def test_an_invalid_scene_exits_1_with_its_location(tmp_path: Path,
                                                    mosquitto: Mosquitto) -> None:
    config = room(tmp_path, mosquitto, """\
        name: Broken
        actions:
          - {at: 0, topic: room1/light, mesage: ON}
        """)
    result = run_runner("play", "show", "--config", str(config))
    assert result.returncode == 1
    assert "show.yaml:3:" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_runner("play", "nosuch", "--config", str(config))
    assert result.returncode == 1 and "nosuch" in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_signal_mid_scene_runs_on_stop_and_safe_state_then_exits_130(
        tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder, signum: int) -> None:
    config = room(tmp_path, mosquitto, """\
        name: Long
        actions:
          - {at: 0, topic: room1/steam, message: "ON", feedback: none}
          - {at: 20, topic: room1/motor, message: START, feedback: none}
        on_stop:
          - {topic: room1/steam, message: "OFF"}
        """)
    proc = spawn_runner("play", "show", "--config", str(config))
    try:
        recorder.wait_for("room1/steam", "ON", timeout=20)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    recorder.wait_for("room1/steam", "OFF")
    wait_until(lambda: recorder.payloads("room1/fog") == ["OFF"], what="safe state")
    recorder.wait_for("runner/room1/status", "offline")
    assert recorder.payloads("room1/motor") == []
    assert "cancelled" in out and "stopped" in out
    assert "Traceback" not in err


def test_without_a_broker_the_scene_plays_simulated_and_exits_3(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    config = room(tmp_path, mosquitto, """\
        name: Nobody listens
        actions:
          - {at: 0, topic: room1/light, message: ON}
        """)
    mosquitto.stop()
    result = run_runner("play", "show", "--config", str(config))
    assert result.returncode == 3, result.stderr
    assert "simulated" in result.stdout
    assert "was not reachable, so 1 command(s) were only simulated" in result.stderr
    assert "Traceback" not in result.stderr
