"""Virtual ESP32s: presence and last will, OK/ERROR answers after latency, flaky drops, the CLI."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from runner.simulate import (
    DeviceFleet,
    Flakiness,
    VirtualDevice,
    devices_for_topics,
    parse_device,
    parse_latency,
)
from tests.brokers import Mosquitto
from tests.conftest import Recorder, run_runner, spawn_runner, wait_until

# Generous: the machine is shared, so only the lower bound of a latency is exact.
LATE_TOLERANCE = 1.5


def retained(broker: Mosquitto, topic: str, timeout: float = 5.0) -> str | None:
    """The retained payload on `topic`, as a fresh subscriber sees it."""
    got: list[str] = []
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2)

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        if msg.retain:
            got.append(msg.payload.decode())
        done.set()

    client.on_message = on_message
    client.on_connect = lambda c, *_a: c.subscribe(topic, 1)
    client.connect(broker.host, broker.port)
    client.loop_start()
    done.wait(timeout)  # nothing arrives when nothing is retained
    client.loop_stop()
    client.disconnect()
    return got[0] if got else None


def command_answer(recorder: Recorder, topic: str, message: str = "ON",
                   feedback_topic: str = "room1/status") -> tuple[str, float]:
    """Publish a command; return the answer and seconds until it arrived."""
    before = len(recorder.on(feedback_topic))
    sent = time.monotonic()
    recorder.client.publish(topic, message, qos=1)
    answers = recorder.wait_for(feedback_topic, count=before + 1, timeout=10)
    answer = answers[before]
    return answer.payload.decode(), answer.at - sent


@pytest.fixture
def fleet_factory(mosquitto: Mosquitto) -> Iterator[list[DeviceFleet]]:
    fleets: list[DeviceFleet] = []
    yield fleets
    for f in fleets:
        f.stop()


def start_fleet(fleets: list[DeviceFleet], *devices: VirtualDevice) -> DeviceFleet:
    fleet = DeviceFleet(devices)
    fleets.append(fleet)
    fleet.start()
    assert fleet.wait_online(10), f"online: {fleet.online()}"
    return fleet


# --- parsing -----------------------------------------------------------------------


def test_latency_is_one_value_or_a_range() -> None:
    assert parse_latency("0.2") == (0.2, 0.2)
    assert parse_latency("0.1-0.5") == (0.1, 0.5)
    for bad in ("fast", "0.5-0.1", "-1", "1-2-3"):
        with pytest.raises(ValueError, match="latency"):
            parse_latency(bad)


def test_device_flag_names_its_topics() -> None:
    assert parse_device("esp32_01:room1/light,room1/motor") == (
        "esp32_01", ("room1/light", "room1/motor"))
    for bad in ("esp32_01", "esp32_01:", ":room1/light", "a/b:room1/light"):
        with pytest.raises(ValueError):
            parse_device(bad)


def test_devices_for_topics_one_per_topic() -> None:
    assert devices_for_topics(["room1/light", "room1/motor", "room1/light"]) == {
        "esp32_room1_light": ("room1/light",), "esp32_room1_motor": ("room1/motor",)}


def test_error_rate_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        VirtualDevice("d", ["room1/x"], error_rate=1.5)


# --- behaviour on a real broker ---------------------------------------------------------


def test_device_announces_online_retained_and_answers_ok_after_latency(
        mosquitto: Mosquitto, recorder: Recorder, fleet_factory: list[DeviceFleet]) -> None:
    start_fleet(fleet_factory, VirtualDevice(
        "esp32_01", ["room1/light"], mosquitto.host, mosquitto.port, latency=(0.2, 0.3)))
    assert retained(mosquitto, "devices/esp32_01/status") == "online"
    for _ in range(3):
        status, latency = command_answer(recorder, "room1/light")
        assert status == "OK"
        assert 0.2 <= latency <= 0.3 + LATE_TOLERANCE


def test_answers_only_its_own_topics_and_never_feedback(
        mosquitto: Mosquitto, recorder: Recorder, fleet_factory: list[DeviceFleet]) -> None:
    fleet = start_fleet(fleet_factory, VirtualDevice(
        "all", ["room1/#"], mosquitto.host, mosquitto.port, latency=(0.0, 0.0)))
    assert command_answer(recorder, "room1/light")[0] == "OK"
    recorder.client.publish("room2/light", "ON", qos=1)
    # The OK above arrived on room1/status, which `room1/#` also matches: never answered.
    assert command_answer(recorder, "room1/motor")[0] == "OK"
    assert fleet.devices[0].answered == 2
    assert recorder.payloads("room2/status") == []


def test_error_rate_one_always_answers_error(
        mosquitto: Mosquitto, recorder: Recorder, fleet_factory: list[DeviceFleet]) -> None:
    start_fleet(fleet_factory, VirtualDevice(
        "esp32_02", ["room1/steam"], mosquitto.host, mosquitto.port,
        latency=(0.0, 0.01), error_rate=1.0))
    assert [command_answer(recorder, "room1/steam")[0] for _ in range(3)] == ["ERROR"] * 3


def test_error_rate_is_roughly_kept(
        mosquitto: Mosquitto, recorder: Recorder, fleet_factory: list[DeviceFleet]) -> None:
    start_fleet(fleet_factory, VirtualDevice(
        "esp32_02", ["room1/steam"], mosquitto.host, mosquitto.port,
        latency=(0.0, 0.0), error_rate=0.5, rng=random.Random(7)))
    for i in range(40):
        recorder.client.publish("room1/steam", str(i), qos=1)
    answers = [m.payload for m in recorder.wait_for("room1/status", count=40)]
    assert 8 <= answers.count(b"ERROR") <= 32
    assert answers.count(b"OK") + answers.count(b"ERROR") == 40


def test_json_feedback_names_the_command_topic(
        mosquitto: Mosquitto, recorder: Recorder, fleet_factory: list[DeviceFleet]) -> None:
    start_fleet(fleet_factory, VirtualDevice(
        "esp32_01", ["room1/light"], mosquitto.host, mosquitto.port, json_feedback=True))
    payload, _ = command_answer(recorder, "room1/light")
    assert json.loads(payload) == {"status": "OK", "topic": "room1/light"}


def test_stop_announces_offline_retained(
        mosquitto: Mosquitto, recorder: Recorder, fleet_factory: list[DeviceFleet]) -> None:
    fleet = start_fleet(fleet_factory, VirtualDevice(
        "esp32_01", ["room1/light"], mosquitto.host, mosquitto.port))
    fleet.stop()
    recorder.wait_for("devices/esp32_01/status", "offline")
    assert retained(mosquitto, "devices/esp32_01/status") == "offline"


def test_dropped_device_goes_offline_by_its_will_and_comes_back(
        mosquitto: Mosquitto, recorder: Recorder, fleet_factory: list[DeviceFleet]) -> None:
    fleet = start_fleet(fleet_factory, VirtualDevice(
        "esp32_01", ["room1/light"], mosquitto.host, mosquitto.port))
    fleet.drop("esp32_01", away=0.5)
    recorder.wait_for("devices/esp32_01/status", "offline")
    recorder.wait_for("devices/esp32_01/status", "online", count=2)
    # Only the broker's last will can have said offline: a drop sends nothing itself.
    assert command_answer(recorder, "room1/light")[0] == "OK"


def test_flaky_devices_drop_off_and_return_on_their_own(
        mosquitto: Mosquitto, recorder: Recorder, fleet_factory: list[DeviceFleet]) -> None:
    flaky = Flakiness(up=(0.2, 0.4), down=(0.2, 0.4))
    start_fleet(fleet_factory, VirtualDevice(
        "esp32_01", ["room1/light"], mosquitto.host, mosquitto.port, flaky=flaky))
    recorder.wait_for("devices/esp32_01/status", "offline", count=2, timeout=10)
    recorder.wait_for("devices/esp32_01/status", "online", count=3, timeout=10)


def test_devices_reconnect_and_resubscribe_after_a_broker_restart(
        mosquitto: Mosquitto, fleet_factory: list[DeviceFleet]) -> None:
    fleet = start_fleet(fleet_factory, VirtualDevice(
        "esp32_01", ["room1/light"], mosquitto.host, mosquitto.port))
    mosquitto.restart()
    wait_until(lambda: not fleet.devices[0].online, what="device notices the outage")
    assert fleet.wait_online(15)
    # A fresh recorder: the fixture's one does not reconnect.
    got = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.on_message = lambda *_a: got.set()
    client.on_connect = lambda c, *_a: c.subscribe("room1/status", 1)
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    try:
        wait_until(client.is_connected, what="test client")
        for _ in range(20):  # the subscription may take a moment after CONNACK
            client.publish("room1/light", "ON", qos=1)
            if got.wait(0.5):
                break
        assert got.is_set(), "no answer after the broker came back"
    finally:
        client.loop_stop()
        client.disconnect()


def test_two_hundred_devices_share_one_network_thread(
        mosquitto: Mosquitto, recorder: Recorder, fleet_factory: list[DeviceFleet]) -> None:
    before = threading.active_count()
    fleet = start_fleet(fleet_factory, *(
        VirtualDevice(f"d{i}", [f"room1/t{i}"], mosquitto.host, mosquitto.port,
                      latency=(0.0, 0.05))
        for i in range(200)))
    assert threading.active_count() - before == 1
    for i in range(0, 200, 20):
        recorder.client.publish(f"room1/t{i}", "ON", qos=1)
    recorder.wait_for("room1/status", "OK", count=10)
    fleet.stop()
    recorder.wait_for("devices/d199/status", "offline")
    wait_until(lambda: sum(recorder.payloads(f"devices/d{i}/status").count("offline")
                           for i in range(200)) == 200, what="200 offline")


# --- the `runner simulate` command ----------------------------------------------------


def spawn_simulator(tmp_path: Path, broker: Mosquitto, *args: str) -> subprocess.Popen[str]:
    return spawn_runner("simulate", "--broker", broker.address, *args, cwd=tmp_path)


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGINT) -> tuple[int, str, str]:
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=15)
    return proc.returncode, out, err


def test_cli_answers_with_ok_within_the_latency_range(
        tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder) -> None:
    proc = spawn_simulator(tmp_path, mosquitto, "--device", "esp32_01:room1/light,room1/motor",
                           "--latency", "0.2-0.4")
    try:
        recorder.wait_for("devices/esp32_01/status", "online", timeout=20)
        for topic in ("room1/light", "room1/motor", "room1/light"):
            status, latency = command_answer(recorder, topic)
            assert status == "OK"
            assert 0.2 <= latency <= 0.4 + LATE_TOLERANCE
    finally:
        code, out, err = stop(proc)
    assert code == 0, err
    assert "Simulating 1 device(s)" in out
    recorder.wait_for("devices/esp32_01/status", "offline")
    assert "Traceback" not in err


def test_cli_error_rate_one_answers_error(
        tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder) -> None:
    proc = spawn_simulator(tmp_path, mosquitto, "--device", "esp32_02:room1/steam",
                           "--error-rate", "1.0", "--latency", "0")
    try:
        recorder.wait_for("devices/esp32_02/status", "online", timeout=20)
        assert command_answer(recorder, "room1/steam")[0] == "ERROR"
        assert command_answer(recorder, "room1/steam")[0] == "ERROR"
    finally:
        stop(proc)


def test_cli_killed_simulator_goes_offline_through_the_last_will(
        tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder) -> None:
    proc = spawn_simulator(tmp_path, mosquitto, "--device", "esp32_01:room1/light",
                           "--device", "esp32_02:room1/steam")
    try:
        recorder.wait_for("devices/esp32_01/status", "online", timeout=20)
        recorder.wait_for("devices/esp32_02/status", "online", timeout=20)
    finally:
        code, _out, _err = stop(proc, signal.SIGKILL)
    assert code == -signal.SIGKILL
    recorder.wait_for("devices/esp32_01/status", "offline")
    recorder.wait_for("devices/esp32_02/status", "offline")
    assert retained(mosquitto, "devices/esp32_02/status") == "offline"


def test_cli_takes_devices_from_the_config(
        tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder) -> None:
    (tmp_path / "runner.yaml").write_text(
        "room: room1\n"
        f"broker: {{host: 127.0.0.1, port: {mosquitto.port}}}\n"
        "devices:\n  esp32_01: [room1/light]\n  esp32_02: [room1/steam]\n")
    proc = spawn_runner("simulate", "--config", str(tmp_path / "runner.yaml"), cwd=tmp_path)
    try:
        recorder.wait_for("devices/esp32_02/status", "online", timeout=20)
        assert command_answer(recorder, "room1/steam")[0] == "OK"
    finally:
        code, out, err = stop(proc, signal.SIGTERM)
    assert code == 0, err
    assert "from the config's devices" in out


def test_cli_without_devices_serves_every_command_topic_of_the_scenes(
        tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder) -> None:
    (tmp_path / "scenes").mkdir()
    (tmp_path / "scenes" / "fog.yaml").write_text(
        "name: Fog\nactions:\n  - {at: 0, topic: room1/fog, message: 'ON'}\n"
        "  - {at: 1, topic: room1/audio, message: stop}\n")
    (tmp_path / "runner.yaml").write_text(
        f"room: room1\nbroker: {{host: 127.0.0.1, port: {mosquitto.port}}}\n")
    proc = spawn_runner("simulate", cwd=tmp_path)
    try:
        recorder.wait_for("devices/esp32_room1_fog/status", "online", timeout=20)
        assert command_answer(recorder, "room1/fog")[0] == "OK"
    finally:
        code, out, err = stop(proc)
    assert code == 0, err
    assert "from the scenes in" in out
    assert "room1/audio" not in out  # media is played locally, no device serves it


@pytest.mark.parametrize("args, words", [
    (["--device", "esp32_01"], "ID:TOPIC"),
    (["--device", "x:room1/a", "--latency", "slow"], "latency"),
    (["--device", "x:room1/a", "--error-rate", "2"], "between 0 and 1"),
    (["--device", "x:room1/a", "--device", "x:room1/b"], "twice"),
])
def test_cli_usage_errors_are_sentences(tmp_path: Path, args: list[str], words: str) -> None:
    result = run_runner("simulate", "--broker", "127.0.0.1:9", *args, cwd=tmp_path)
    assert result.returncode == 2
    assert words in result.stderr
    assert "Traceback" not in result.stderr
