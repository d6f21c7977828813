"""`runner serve` as a subprocess against a private mosquitto, watched by a separate subscriber."""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.brokers import Mosquitto, free_port
from tests.conftest import Recorder, run_runner, spawn_runner, wait_until

INTRO = """\
name: Intro
actions:
  - {at: 0, topic: room1/light, message: "ON", feedback: none}
  - {at: 1.5, topic: room1/motor, message: START, feedback: none}
on_stop:
  - {topic: room1/light, message: "OFF"}
"""
QUICK = """\
name: Quick
duration: 0.3
actions:
  - {at: 0, topic: room1/fog, message: "ON", feedback: none}
"""


def write_room(root: Path, broker: Mosquitto, *, trigger_message: str = "PRESSED",
               extra: str = "") -> Path:
    """A room: two scenes, a button trigger, a safe state; returns the config path."""
    scenes = root / "scenes"
    scenes.mkdir(parents=True, exist_ok=True)
    (scenes / "intro.yaml").write_text(INTRO)
    (scenes / "quick.yaml").write_text(QUICK)
    config = root / "runner.yaml"
    config.write_text(
        "room: room1\n"
        f"broker: {{host: 127.0.0.1, port: {broker.port}, connect_retries: 2, retry_delay: 0.2}}\n"
        "scenes_dir: scenes\n"
        "dashboard: {enabled: false}\n"
        "triggers:\n"
        f"  - {{topic: room1/button, message: {trigger_message}, scene: intro}}\n"
        "safe_state:\n"
        "  - {topic: room1/steam, message: \"OFF\"}\n"
        f"{extra}"
    )
    return config


class Served:
    """A running `runner serve`, with its log lines collected as they come."""

    def __init__(self, config: Path) -> None:
        self.proc = spawn_runner("serve", "--config", str(config), cwd=config.parent)
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    @property
    def log(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def wait_log(self, text: str, timeout: float = 10.0) -> None:
        wait_until(lambda: text in self.log, timeout, what=f"log line {text!r}:\n{self.log}")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 10.0) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()


Serve = Callable[[Path], Served]


@pytest.fixture
def serve(recorder: Recorder) -> Iterator[Serve]:
    """Start `runner serve --config PATH`; waits until the runner announced itself online."""
    started: list[Served] = []

    def start(config: Path) -> Served:
        recorder.clear()
        served = Served(config)
        started.append(served)
        wait_until(lambda: "online" in recorder.payloads("runner/room1/status")
                   and "ready" in served.log,
                   timeout=45, what=f"runner online:\n{served.log}")
        return served

    yield start
    for s in started:
        s.close()


def send(recorder: Recorder, topic: str, payload: str, retain: bool = False) -> None:
    recorder.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)


def state(recorder: Recorder) -> dict[str, object]:
    msgs = recorder.on("runner/room1/state")
    assert msgs, "no retained state published"
    doc: dict[str, object] = json.loads(msgs[-1].payload)
    return doc


def test_a_trigger_plays_its_scene_once_for_a_double_press(
        tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder, serve: Serve) -> None:
    served = serve(write_room(tmp_path, mosquitto))
    send(recorder, "room1/button", "WRONG")  # another payload is not the trigger
    send(recorder, "room1/button", "PRESSED")
    send(recorder, "room1/button", "PRESSED")  # a bounce, within min_interval
    recorder.wait_for("room1/motor", "START", timeout=10)
    assert recorder.payloads("room1/light") == ["ON"]
    assert recorder.payloads("room1/motor") == ["START"]
    served.wait_log("ignored")
    assert "min_interval" in served.log


def test_a_retained_trigger_does_not_start_a_scene(
        tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder, serve: Serve) -> None:
    send(recorder, "room1/button", "PRESSED", retain=True)  # left behind by some device
    served = serve(write_room(tmp_path, mosquitto))
    served.wait_log("Retained message on room1/button ignored")
    with pytest.raises(AssertionError):
        recorder.wait_for("room1/light", "ON", timeout=1.0)


def test_cmd_play_stop_panic_and_the_retained_state(
        tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder, serve: Serve) -> None:
    serve(write_room(tmp_path, mosquitto))
    cmd = "runner/room1/cmd"
    send(recorder, cmd, json.dumps({"command": "play", "scene": "intro"}))
    recorder.wait_for("room1/light", "ON")
    wait_until(lambda: state(recorder).get("scene") == "intro", what="state: intro plays")
    playing = state(recorder)
    assert playing["started"] and isinstance(playing["elapsed"], float)
    assert (playing["name"], playing["duration"]) == ("Intro", 1.5)
    assert isinstance(playing["run_id"], str) and playing["run_id"]

    def next_cue() -> Any:
        return state(recorder).get("next_cue")

    # Once the light is on, the motor is next: the whole next-cue shape, keys in order.
    wait_until(lambda: isinstance(next_cue(), dict) and next_cue()["topic"] == "room1/motor",
               what="state: the motor is next")
    nxt = next_cue()
    assert list(nxt) == ["at", "in", "topic", "message", "label"]
    assert (nxt["at"], nxt["topic"], nxt["message"], nxt["label"]) == (
        1.5, "room1/motor", "START", None)
    assert isinstance(nxt["in"], float) and 0 <= nxt["in"] <= 1.5

    send(recorder, cmd, json.dumps({"command": "stop"}))
    recorder.wait_for("room1/light", "OFF")  # on_stop
    recorder.wait_for("room1/steam", "OFF")  # the room's safe state
    # The player goes idle a moment before its `finished` event reaches the service.
    wait_until(lambda: state(recorder).get("scene") is None
               and state(recorder).get("last_run") is not None, what="state: idle, last run")
    last = state(recorder)["last_run"]
    assert isinstance(last, dict)
    assert (last["scene"], last["outcome"], last["trigger"]) == ("intro", "stopped", "cmd")
    with pytest.raises(AssertionError):  # the cue at 1.5 s was cancelled
        recorder.wait_for("room1/motor", "START", timeout=2.0)

    send(recorder, cmd, "panic")  # idle: the safe state all the same
    recorder.wait_for("room1/steam", "OFF", count=2)

    # A fresh subscriber gets the state from the broker: it is retained.
    got: list[bytes] = []
    fresh = _subscribe_once(recorder, "runner/room1/state", got)
    try:
        wait_until(lambda: got, what="retained state for a late subscriber")
        assert json.loads(got[0])["scene"] is None
    finally:
        fresh.loop_stop()
        fresh.disconnect()


def _subscribe_once(recorder: Recorder, topic: str, into: list[bytes]) -> mqtt.Client:
    host, port = recorder.client.host, recorder.client.port
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="late-subscriber")
    c.on_message = lambda _c, _u, m: into.append(bytes(m.payload)) if m.retain else None
    c.on_connect = lambda cl, *_a: cl.subscribe(topic, qos=1)
    c.connect(host, port)
    c.loop_start()
    return c


def test_bad_commands_are_logged_and_the_service_goes_on(
        tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder, serve: Serve) -> None:
    served = serve(write_room(tmp_path, mosquitto))
    cmd = "runner/room1/cmd"
    send(recorder, cmd, json.dumps({"command": "dance"}))
    send(recorder, cmd, json.dumps({"command": "play", "scene": "intr"}))
    send(recorder, cmd, json.dumps({"command": "play", "scene": "../../etc/passwd"}))
    send(recorder, cmd, "{not json")
    recorder.client.publish(cmd, b"\xff\xfe\x00", qos=1).wait_for_publish(5)
    send(recorder, cmd, json.dumps({"command": "play", "scene": "quick"}))
    recorder.wait_for("room1/fog", "ON")
    served.wait_log("unknown command 'dance'")
    assert "no scene 'intr' (did you mean 'intro'?)" in served.log
    assert "no scene '../../etc/passwd'" in served.log
    assert "not JSON" in served.log
    assert "binary" in served.log and cmd in served.log
    assert served.proc.poll() is None
    assert "Traceback" not in served.log


def test_sighup_with_a_broken_config_keeps_the_old_one(
        tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder, serve: Serve) -> None:
    config = write_room(tmp_path, mosquitto)
    served = serve(config)
    good = config.read_text()
    config.write_text(good.replace("scene: intro", "scene: intro\n    bogus_key: 1")
                      .replace("scenes_dir: scenes", "scenes_dir: scenes\nshow: []"))
    served.signal(signal.SIGHUP)
    served.wait_log("Reload refused")
    assert f"{config}:" in served.log  # errors as validate prints them: file:line:col
    assert "still running the previous config" in served.log
    send(recorder, "room1/button", "PRESSED")
    recorder.wait_for("room1/light", "ON")  # the old trigger still plays
    assert recorder.on("runner/room1/status")[-1].payload == b"online"  # connection kept

    # A valid change is applied on the next SIGHUP, still without reconnecting.
    write_room(tmp_path, mosquitto, trigger_message="PUSHED")
    served.signal(signal.SIGHUP)
    served.wait_log("Reloaded")
    wait_until(lambda: state(recorder).get("scene") is None, timeout=10, what="intro ended")
    send(recorder, "room1/button", "PUSHED")
    recorder.wait_for("room1/light", "ON", count=2)
    assert recorder.payloads("runner/room1/status") == ["online"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_sigterm_mid_scene_sends_on_stop_safe_state_offline_and_exits_0(
        tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder, serve: Serve,
        sig: signal.Signals) -> None:
    served = serve(write_room(tmp_path, mosquitto))
    send(recorder, "room1/button", "PRESSED")
    recorder.wait_for("room1/light", "ON")
    asked = time.monotonic()
    served.signal(sig)
    code = served.wait_exit(timeout=10)
    took = time.monotonic() - asked
    assert code == 0, served.log
    recorder.wait_for("room1/light", "OFF")
    recorder.wait_for("room1/steam", "OFF")
    recorder.wait_for("runner/room1/status", "offline")
    assert "room1/motor" not in [m.topic for m in recorder.messages]
    # Order on the wire: safe state before the runner says it is gone.
    sequence = [(m.topic, m.payload) for m in recorder.messages]
    assert sequence.index(("room1/steam", b"OFF")) < sequence.index(
        ("runner/room1/status", b"offline"))
    assert "Stopped" in served.log and "longer than" not in served.log
    print(f"SIGTERM to exit: {took:.2f}s")
    assert took < 2.0 + 3.0  # 2 s is the service's own deadline; the rest is process teardown


def test_sigkill_leaves_the_last_will_offline_and_the_history_so_far(
        tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder, serve: Serve) -> None:
    config = write_room(tmp_path, mosquitto)
    served = serve(config)
    send(recorder, "room1/button", "PRESSED")
    recorder.wait_for("room1/light", "ON")
    db = tmp_path / "history.sqlite3"

    def actions_written() -> list[tuple[str, str]]:
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT outcome, record FROM runs JOIN actions USING (run_id)"
                                ).fetchall()

    wait_until(actions_written, what="the first action in the history")  # as it happens
    served.signal(signal.SIGKILL)
    served.wait_exit()
    msgs = recorder.wait_for("runner/room1/status", "offline", timeout=10)
    assert msgs[-1].payload == b"offline"
    [(outcome, record)] = actions_written()
    assert outcome == "running"
    assert json.loads(record)["topic"] == "room1/light"
    assert json.loads(record)["delivery"] == "sent"

    again = serve(config)  # the next start closes the run the crash left open
    again.wait_log("marked interrupted")
    result = run_runner("history", "--config", str(config), cwd=tmp_path)
    assert "interrupted" in result.stdout


def test_history_survives_a_restart(
        tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder, serve: Serve) -> None:
    config = write_room(tmp_path, mosquitto)
    first = serve(config)
    send(recorder, "runner/room1/cmd", json.dumps({"command": "play", "scene": "quick"}))
    wait_until(lambda: recorder.on("runner/room1/state")
               and isinstance(state(recorder).get("last_run"), dict), what="quick ended")
    first.signal(signal.SIGTERM)
    assert first.wait_exit() == 0

    second = serve(config)
    send(recorder, "room1/button", "PRESSED")
    recorder.wait_for("room1/light", "ON")
    second.signal(signal.SIGTERM)  # intro is cut short: outcome shutdown
    assert second.wait_exit() == 0

    result = run_runner("history", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    intro = next(ln for ln in lines if " intro " in ln)
    quick = next(ln for ln in lines if " quick " in ln)
    assert lines.index(intro) < lines.index(quick)  # newest first
    assert "trigger:room1/button" in intro and "shutdown" in intro
    assert "cmd" in quick and "completed" in quick
    assert (tmp_path / "history.sqlite3").exists()


def test_a_scene_start_names_the_devices_that_are_offline(
        tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder, serve: Serve) -> None:
    send(recorder, "devices/esp32_02/status", "offline", retain=True)
    send(recorder, "devices/esp32_03/status", "online", retain=True)
    config = write_room(tmp_path, mosquitto, extra=(
        "devices:\n"
        "  esp32_01: [room1/light]\n"
        "  esp32_02: [room1/motor]\n"
        "  esp32_03: [room1/fog]\n"
    ))
    served = serve(config)
    served.wait_log("device esp32_03 connected")
    send(recorder, "room1/button", "PRESSED")
    served.wait_log("needs device(s) that are not online")
    assert "esp32_01 (never seen), esp32_02 (offline)" in served.log
    assert "esp32_03 (" not in served.log


def test_serve_with_a_broken_config_says_where_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "scenes").mkdir()
    (tmp_path / "runner.yaml").write_text("room: room1\nscenes_dir: scenes\nbrokr: {}\n")
    result = run_runner("serve", "--config", str(tmp_path / "runner.yaml"), cwd=tmp_path,
                        timeout=30)
    assert result.returncode == 1
    assert "runner.yaml:3:" in result.stderr and "Traceback" not in result.stderr



def test_sigterm_while_the_broker_is_still_being_tried_stops_at_once(tmp_path: Path) -> None:
    (tmp_path / "scenes").mkdir()
    (tmp_path / "scenes" / "quick.yaml").write_text(QUICK)
    (tmp_path / "runner.yaml").write_text(
        "room: room1\n"
        # a port nobody listens on
        f"broker: {{host: 127.0.0.1, port: {free_port()}, connect_retries: 20, "
        "retry_delay: 1}\n"
        "scenes_dir: scenes\n"
        "dashboard: {enabled: false}\n")
    served = Served(tmp_path / "runner.yaml")
    try:
        served.wait_log("not reachable (attempt 1 of 20)", timeout=20)
        asked = time.monotonic()
        served.signal(signal.SIGTERM)
        assert served.wait_exit(timeout=10) == 0, served.log
        assert time.monotonic() - asked < 2.0 + 3.0
        assert "ready" not in served.log  # the shows never started
    finally:
        served.close()


def test_serve_starts_the_dashboard_from_the_config(
        tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder, serve: Serve) -> None:
    port = free_port()
    config = write_room(tmp_path, mosquitto)
    config.write_text(config.read_text().replace(
        "dashboard: {enabled: false}", f"dashboard: {{bind: 127.0.0.1, port: {port}}}"))
    served = serve(config)
    served.wait_log(f"Dashboard on http://127.0.0.1:{port}/")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as page:
        assert page.status == 200
    asked = time.monotonic()
    served.signal(signal.SIGTERM)
    assert served.wait_exit() == 0
    took = time.monotonic() - asked
    print(f"SIGTERM to exit with the dashboard: {took:.2f}s")
    assert "longer than" not in served.log


def test_overlapping_trigger_topics_start_a_scene_once_per_message(
        tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder, serve: Serve) -> None:
    config = write_room(tmp_path, mosquitto)
    (tmp_path / "scenes" / "queued.yaml").write_text(
        "name: Queued\nmode: queue\nduration: 0.2\nactions:\n"
        "  - {at: 0, topic: room1/fog, message: \"ON\", feedback: none}\n")
    config.write_text(config.read_text().replace(
        "triggers:\n",
        "triggers:\n  - {topic: \"room1/#\", message: GO, scene: queued, min_interval: 0}\n"))
    serve(config)
    send(recorder, "room1/button", "GO")  # matches room1/# and the room1/button route
    recorder.wait_for("room1/fog", "ON")
    with pytest.raises(AssertionError):  # a second (queued) start would send it again
        recorder.wait_for("room1/fog", "ON", count=2, timeout=1.5)


def test_a_history_that_cannot_be_written_does_not_keep_the_room_dark(
        tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder, serve: Serve) -> None:
    (tmp_path / "not_a_folder").write_text("")
    config = write_room(tmp_path, mosquitto,
                        extra="history_file: not_a_folder/history.sqlite3\n")
    served = serve(config)
    assert "cannot be written" in served.log and "history_file" in served.log
    send(recorder, "room1/button", "PRESSED")
    recorder.wait_for("room1/light", "ON")
    assert "Traceback" not in served.log


def test_a_broken_scene_at_start_is_left_out_and_the_others_play(
        tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder, serve: Serve) -> None:
    config = write_room(tmp_path, mosquitto)
    broken = tmp_path / "scenes" / "intro.yaml"
    broken.write_text(INTRO.replace("at: 1.5", "at: soon"))  # the trigger's own scene
    served = serve(config)
    assert f"{broken}:" in served.log and "Scene intro left out" in served.log
    send(recorder, "room1/button", "PRESSED")
    served.wait_log("scene 'intro' is not loaded")
    send(recorder, "runner/room1/cmd", json.dumps({"command": "play", "scene": "quick"}))
    recorder.wait_for("room1/fog", "ON")
    assert recorder.payloads("room1/light") == []  # never half-played


def test_sigterm_after_a_reload_still_stops_the_room_cleanly(
        tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder, serve: Serve) -> None:
    # A reload reads the config in a spawned child; starting multiprocessing's resource
    # tracker unblocks SIGTERM on the way, and the room then died of the bare signal
    # (exit -15, no safe state, no `offline`).
    served = serve(write_room(tmp_path, mosquitto))
    served.signal(signal.SIGHUP)
    served.wait_log("Reloaded")
    served.signal(signal.SIGTERM)
    code = served.wait_exit(timeout=10)
    assert code == 0, served.log
    recorder.wait_for("runner/room1/status", "offline")
    assert "SIGTERM: stopping the room" in served.log and "Stopped" in served.log


def test_sigterm_while_a_big_reload_is_read_stops_the_room_without_waiting_for_it(
        tmp_path: Path, mosquitto: Mosquitto, recorder: Recorder, serve: Serve) -> None:
    # The reload was read on the signal loop itself: a SIGTERM then waited for the whole
    # read (seconds for a big config, up to the reload's timeout) before stopping.
    config = write_room(tmp_path, mosquitto)
    served = serve(config)
    lines = ["name: Big", "actions:"] + [
        f"  - {{at: {i * 0.01:.2f}, topic: room1/light, message: L{i}, feedback: none}}"
        for i in range(20_000)]
    (tmp_path / "scenes" / "big.yaml").write_text("\n".join(lines) + "\n")
    served.signal(signal.SIGHUP)
    served.wait_log("SIGHUP: reloading")
    served.signal(signal.SIGTERM)
    assert served.wait_exit(timeout=30) == 0, served.log
    recorder.wait_for("runner/room1/status", "offline")
    log = served.log
    assert "SIGTERM: stopping the room" in log and "Stopped" in log, log
    # Stopped while the reload was still being read: it never got to apply.
    assert "Reloaded" not in log.split("SIGTERM: stopping the room")[0], log
