"""`runner devices`: devices from retained presence on a real broker: online, offline, last seen."""

from __future__ import annotations

import json
from pathlib import Path

from tests.brokers import Mosquitto, free_port
from tests.conftest import Recorder, run_runner


def _retain(recorder: Recorder, topic: str, payload: str) -> None:
    recorder.client.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)


def _config(tmp_path: Path, broker: Mosquitto) -> Path:
    (tmp_path / "scenes").mkdir()
    path = tmp_path / "runner.yaml"
    path.write_text(
        "room: room1\n"
        f"broker: {{host: 127.0.0.1, port: {broker.port}}}\n"
        "scenes_dir: scenes\n"
        "devices:\n"
        "  esp32_01: [room1/light]\n"
        "  esp32_02: [room1/steam]\n"
        "  esp32_09: [room1/motor]\n"
    )
    return path


def _row(out: str, device: str) -> list[str]:
    line = next(ln for ln in out.splitlines() if ln.startswith(device + " "))
    return line.split()


def test_devices_lists_presence_and_configured_devices_never_seen(
        tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder) -> None:
    _retain(recorder, "devices/esp32_01/status", "online")
    _retain(recorder, "devices/esp32_02/status", "offline")
    _retain(recorder, "devices/stray/status", "online")  # on the broker, not in the config
    result = run_runner("devices", "--config", str(_config(tmp_path, mosquitto)),
                        "--wait", "0.5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert _row(out, "esp32_01")[1] == "online"
    assert _row(out, "esp32_02")[1] == "offline"
    assert _row(out, "stray")[1] == "online"
    assert _row(out, "esp32_09")[1:3] == ["never", "seen"]
    assert "room1/light" in " ".join(_row(out, "esp32_01"))


def test_devices_takes_last_seen_from_the_room_service_state(
        tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder) -> None:
    _retain(recorder, "devices/esp32_02/status", "offline")
    _retain(recorder, "runner/room1/state", json.dumps({"scene": None, "devices": {
        "esp32_02": {"online": False, "last_seen": "2026-11-28T14:00:03+00:00"}}}))
    result = run_runner("devices", "--config", str(_config(tmp_path, mosquitto)),
                        "--wait", "0.5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert _row(result.stdout, "esp32_02")[1:3] == ["offline", "2026-11-28T14:00:03+00:00"]


def test_devices_with_no_broker_says_so_without_a_traceback(tmp_path: Path) -> None:
    port = free_port()
    result = run_runner("devices", "--broker", f"127.0.0.1:{port}", "--wait", "0",
                        cwd=tmp_path, timeout=60)
    assert result.returncode == 1
    err = result.stderr
    assert f"broker at 127.0.0.1:{port} is not reachable" in err, err
    assert "--broker HOST:PORT" in err and "Traceback" not in err
    # `runner devices` sends nothing: no simulation mode, no "commands are logged" line.
    assert "SIMULATION" not in err and "logged, not sent" not in err, err


def test_devices_with_no_broker_names_the_config_to_check(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path, port=free_port())  # never started: nothing listens
    config = _config(tmp_path, broker)
    result = run_runner("devices", "--config", str(config), "--wait", "0", cwd=tmp_path,
                        timeout=60)
    assert result.returncode == 1
    assert f"broker at 127.0.0.1:{broker.port} is not reachable" in result.stderr
    assert f"broker.host/port in {config}" in result.stderr
    assert "SIMULATION" not in result.stderr
