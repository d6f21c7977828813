"""First contact (issue 11 item 6): what the commands say is true, and says how to go on."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from tests.brokers import Mosquitto
from tests.conftest import run_runner, spawn_runner
from tests.test_security import Log


def test_shows_without_a_config_names_where_it_looked_and_how_to_pass_one(
        tmp_path: Path) -> None:
    result = run_runner("shows", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "default config" not in out
    assert "No config found" in out
    assert str(tmp_path.resolve() / "runner.yaml") in out
    assert "--config" in out


def test_shows_with_a_config_without_shows_names_that_file(tmp_path: Path) -> None:
    (tmp_path / "scenes").mkdir()
    config = tmp_path / "room.yaml"
    config.write_text("room: room1\nscenes_dir: scenes\n")
    result = run_runner("shows", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"No shows configured in {config}" in result.stdout


def test_starlette_test_client_imports_without_a_deprecation_warning() -> None:
    # The test extra installs httpx2, the client starlette.testclient is built on; with plain
    # httpx every test run ended on "Using `httpx` with `starlette.testclient` is deprecated".
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", "import starlette.testclient"],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


LOG_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3})([+-]\d{2}:\d{2}) ", re.M)


def _play_log_stamp(tmp_path: Path, zone_line: str, env: dict[str, str] | None = None,
                    ) -> tuple[str, str]:
    """`runner play --simulate` in a room folder; the time and offset of its SIMULATED line."""
    (tmp_path / "scenes").mkdir()
    (tmp_path / "media").mkdir()
    (tmp_path / "scenes" / "show.yaml").write_text(
        "name: Show\nactions:\n  - {at: 0, topic: room1/light, message: ON, feedback: none}\n")
    config = tmp_path / "runner.yaml"
    config.write_text(f"room: room1\nscenes_dir: scenes\nmedia_dir: media\n{zone_line}")
    result = run_runner("play", "show", "--simulate", "--config", str(config), cwd=tmp_path,
                        env=env)
    assert result.returncode == 0, result.stderr
    line = next(ln for ln in result.stderr.splitlines() if "SIMULATED room1/light = ON" in ln)
    stamp = LOG_TIME.match(line)
    assert stamp is not None, line
    return stamp.group(1), stamp.group(2)


def test_play_log_lines_carry_the_rooms_time_zone_and_its_offset(tmp_path: Path) -> None:
    # Asia/Kathmandu is +05:45 all year: no machine's own zone (nor UTC) reads like it.
    before = datetime.now(timezone.utc).replace(microsecond=0)
    at, offset = _play_log_stamp(tmp_path, "timezone: Asia/Kathmandu\n",
                                 env={"TZ": "UTC"})
    assert offset == "+05:45"
    assert datetime.fromisoformat(at + offset) >= before - timedelta(seconds=1)


def test_log_lines_of_a_room_without_a_zone_carry_the_systems_offset(tmp_path: Path) -> None:
    _at, offset = _play_log_stamp(tmp_path, "", env={"TZ": "America/St_Johns"})
    assert offset in ("-03:30", "-02:30")  # Newfoundland: standard or daylight time


def _stamp_of(log: str, text: str) -> str:
    line = next(ln for ln in log.splitlines() if text in ln)
    stamp = LOG_TIME.match(line)
    assert stamp is not None, line
    return stamp.group(2)


def test_serve_log_lines_carry_the_rooms_offset_and_follow_a_reloaded_zone(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    (tmp_path / "scenes").mkdir()
    config = tmp_path / "runner.yaml"
    body = (f"room: room1\nbroker: {{host: 127.0.0.1, port: {mosquitto.port}}}\n"
            "scenes_dir: scenes\ndashboard: {enabled: false}\n")
    config.write_text(body + "timezone: Asia/Kathmandu\n")
    serve = Log(spawn_runner("serve", "--config", str(config), cwd=tmp_path,
                             env={"TZ": "UTC"}))
    try:
        serve.wait_for("ready")
        assert _stamp_of(serve.text, "ready") == "+05:45"
        config.write_text(body + "timezone: America/St_Johns\n")
        serve.proc.send_signal(signal.SIGHUP)
        serve.wait_for("Reloaded")
    finally:
        log = serve.finish()
    assert _stamp_of(log, "stopping the room") in ("-03:30", "-02:30"), log


def _room_with_history(tmp_path: Path, broker: Mosquitto) -> tuple[Path, Path]:
    (tmp_path / "scenes").mkdir()
    (tmp_path / "media").mkdir()
    (tmp_path / "scenes" / "show.yaml").write_text(
        "name: Show\nactions:\n  - {at: 0, topic: room1/light, message: ON, feedback: none}\n"
        "  - {at: 0.1, topic: room1/steam, message: ON}\n")  # unanswered: TIMEOUT
    history = tmp_path / "state" / "runs.sqlite3"
    config = tmp_path / "runner.yaml"
    config.write_text(
        f"room: room1\nbroker: {{host: 127.0.0.1, port: {broker.port}, connect_retries: 1}}\n"
        f"scenes_dir: scenes\nmedia_dir: media\nfeedback: {{timeout: 0.3}}\n"
        f"history_file: {history}\n")
    return config, history


def test_a_play_run_is_recorded_in_the_rooms_history_and_runner_history_shows_it(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    config, history = _room_with_history(tmp_path, mosquitto)
    played = run_runner("play", "show", "--config", str(config), cwd=tmp_path)
    assert played.returncode == 3, played.stderr  # the steam cue was never confirmed
    assert history.is_file()
    listed = run_runner("history", "--config", str(config), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    row = next(ln for ln in listed.stdout.splitlines() if " show " in f" {ln} ")
    assert row.split()[2:4] == ["show", "cli"], listed.stdout
    assert "room1/steam=ON TIMEOUT" in row, listed.stdout
    assert "running" not in row  # its end was written before `runner play` exited


def test_a_simulated_play_run_is_not_recorded(tmp_path: Path, mosquitto: Mosquitto) -> None:
    config, history = _room_with_history(tmp_path, mosquitto)
    played = run_runner("play", "show", "--simulate", "--config", str(config), cwd=tmp_path)
    assert played.returncode == 0, played.stderr
    assert not history.exists()
    listed = run_runner("history", "--config", str(config), cwd=tmp_path)
    assert "play --simulate are not recorded" in listed.stdout
