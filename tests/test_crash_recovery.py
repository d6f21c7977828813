"""`runner serve` killed with -9 mid-scene: the restart puts the room into its safe state."""

from __future__ import annotations

import json
import signal
import sqlite3
from pathlib import Path

from tests.brokers import Mosquitto
from tests.conftest import Recorder, wait_until
from tests.test_service import Serve, _subscribe_once, send, serve

__all__ = ["serve"]  # the fixture, used by name

STEAM = """\
name: Steam
actions:
  - {at: 0, topic: room1/steam, message: "ON", feedback: none}
  - {at: 0.1, topic: room1/motor, message: START, feedback: none}
  - {at: 60, topic: room1/light, message: "ON", feedback: none}
on_stop:
  - {topic: room1/motor, message: STOP}
"""


def steam_room(root: Path, broker: Mosquitto, extra: str = "") -> Path:
    (root / "scenes").mkdir()
    (root / "scenes" / "steam.yaml").write_text(STEAM)
    config = root / "runner.yaml"
    config.write_text(
        "room: room1\n"
        f"broker: {{host: 127.0.0.1, port: {broker.port}, connect_retries: 2, retry_delay: 0.2}}\n"
        "dashboard: {enabled: false}\n"
        "triggers:\n"
        "  - {topic: room1/button, message: PRESSED, scene: steam, min_interval: 0}\n"
        "safe_state:\n"
        "  - {topic: room1/steam, message: \"OFF\"}\n"
        f"{extra}")
    return config


def crash_mid_scene(config: Path, recorder: Recorder, serve: Serve) -> None:
    served = serve(config)
    send(recorder, "room1/button", "PRESSED")
    recorder.wait_for("room1/motor", "START")
    wait_until(lambda: any(json.loads(s).get("scene") == "steam"
                           for s in recorder.payloads("runner/room1/state")),
               what="the state saying steam plays")

    def written() -> int:
        with sqlite3.connect(config.parent / "history.sqlite3") as conn:
            return int(conn.execute("SELECT count(*) FROM actions").fetchone()[0])

    wait_until(lambda: written() >= 2, what="both cues in the history")
    served.signal(signal.SIGKILL)
    served.wait_exit()


def topics(recorder: Recorder) -> list[tuple[str, bytes]]:
    with recorder.lock:
        return [(m.topic, m.payload) for m in recorder.messages if m.topic.startswith("room1/")
                and m.topic != "room1/button"]


def test_kill_9_mid_scene_then_restart_sends_on_stop_and_safe_state_first(
        tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder, serve: Serve) -> None:
    config = steam_room(tmp_path, mosquitto)
    crash_mid_scene(config, recorder, serve)

    again = serve(config)  # clears the recorder first
    recorder.wait_for("room1/steam", "OFF")
    assert topics(recorder)[:2] == [("room1/motor", b"STOP"), ("room1/steam", b"OFF")]
    assert "never ended" in again.log and "steam" in again.log
    wait_until(lambda: recorder.payloads("runner/room1/state")
               and json.loads(recorder.payloads("runner/room1/state")[-1])["scene"] is None,
               what="the idle state")
    got: list[bytes] = []
    fresh = _subscribe_once(recorder, "runner/room1/state", got)
    try:
        wait_until(lambda: got, what="retained state for a late subscriber")
        assert json.loads(got[0])["scene"] is None
    finally:
        fresh.loop_stop()
        fresh.disconnect()

    # The next cue comes after the safe state, never before it.
    send(recorder, "room1/button", "PRESSED")
    recorder.wait_for("room1/motor", "START")
    assert topics(recorder)[:4] == [("room1/motor", b"STOP"), ("room1/steam", b"OFF"),
                                    ("room1/steam", b"ON"), ("room1/motor", b"START")]


def test_a_clean_start_sends_nothing_unless_always(
        tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder, serve: Serve) -> None:
    config = steam_room(tmp_path, mosquitto)
    first = serve(config)
    first.signal(signal.SIGTERM)
    assert first.wait_exit() == 0
    second = serve(config)  # after a clean stop: no crash, nothing sent
    assert "safe-state command(s) at start" not in second.log
    assert topics(recorder) == []
    second.signal(signal.SIGTERM)
    assert second.wait_exit() == 0

    config.write_text(config.read_text() + "safe_state_at_start: always\n")
    third = serve(config)
    recorder.wait_for("room1/steam", "OFF")
    assert "safe_state_at_start: always" in third.log


def test_never_leaves_the_room_as_the_crash_left_it(
        tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder, serve: Serve) -> None:
    config = steam_room(tmp_path, mosquitto, extra="safe_state_at_start: never\n")
    crash_mid_scene(config, recorder, serve)
    again = serve(config)
    again.wait_log("left as the crash left it")
    assert topics(recorder) == []
