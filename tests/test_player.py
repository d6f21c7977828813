"""The scene player against a real mosquitto: cues on time, in order, cancelled, confirmed."""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from runner.media import MediaBackend, SimulatedMedia
from runner.model import Action, BrokerConfig, Config, FeedbackPolicy, Mode, Scene
from runner.mqtt.client import MQTTClient
from runner.mqtt.feedback import FeedbackTracker
from runner.mqtt.stack import ClientSetup, build_mqtt_stack
from runner.player import Player
from runner.records import (
    Delivery,
    FeedbackStatus,
    Outcome,
    PlayerSnapshot,
    SceneRun,
    player_state_json,
)
from tests.brokers import Mosquitto
from tests.conftest import Recorder, wait_until

TOLERANCE = 0.050  # seconds: generous, the test machine has 2 busy cores
NONE = FeedbackPolicy.NONE


def act(at: float, topic: str, message: str, **kw: object) -> Action:
    return Action(at=at, topic=topic, message=message, **kw)  # type: ignore[arg-type]


def scene(*actions: Action, duration: float | None = None, on_stop: tuple[Action, ...] = (),
          sid: str = "test", **kw: object) -> Scene:
    acts = tuple(sorted(actions, key=lambda a: a.at))
    return Scene(id=sid, name=sid.title(), room="room1", actions=acts,
                 duration=duration if duration is not None else acts[-1].at,
                 on_stop=on_stop, **kw)  # type: ignore[arg-type]


@dataclass
class Rig:
    """A player wired to the real MQTT client and feedback tracker, as the service does it."""

    player: Player
    client: MQTTClient
    tracker: FeedbackTracker
    config: Config

    def play(self, s: Scene) -> SceneRun:
        run = self.player.play(s)
        assert run is not None
        return run

    def elapsed(self, run: SceneRun) -> float:
        return time.time() - run.started_at


def make_rig(broker: Mosquitto, media: MediaBackend, tmp_path: Path, *,
             max_backoff: float = 0.2, **player_kw: object,
             ) -> tuple[Rig, Callable[[], None]]:
    config = Config(room="room1", broker=BrokerConfig(host=broker.host, port=broker.port),
                    media_dir=tmp_path, feedback_timeout=0.5,
                    safe_state=(act(0, "room1/fog", "OFF"),))
    setup = replace(ClientSetup.from_config(config), client_id="runner-under-test",
                    connect_retries=2, retry_delay=0.1, max_backoff=max_backoff,
                    reconnect_delay=None if max_backoff > 0.2 else 0.1, presence_topic=None)
    mqtt = build_mqtt_stack(config, {}, client=setup)
    client, tracker = mqtt.client, mqtt.tracker
    assert client.connect()
    player = Player(client, tracker, media, config, **player_kw)  # type: ignore[arg-type]

    def close() -> None:
        player.shutdown()
        client.disconnect()
        tracker.close()
        media.close()

    return Rig(player, client, tracker, config), close


@pytest.fixture
def rig(mosquitto: Mosquitto, tmp_path: Path) -> Iterator[Rig]:
    r, close = make_rig(mosquitto, SimulatedMedia(tmp_path), tmp_path)
    yield r
    close()


class Device:
    """A stand-in ESP32: answers every command on its topics on `<room>/status`."""

    def __init__(self, broker: Mosquitto, topics: list[str], answer: str = "OK") -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-device")
        ready = threading.Event()
        def on_connect(c: mqtt.Client, *_: object) -> None:
            for t in topics:
                c.subscribe(t, 1)

        self.client.on_connect = on_connect
        self.client.on_subscribe = lambda *_: ready.set()

        def on_message(c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
            c.publish("room1/status", json.dumps({"status": answer, "topic": msg.topic}), 1)

        self.client.on_message = on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert ready.wait(5), "test device could not subscribe"

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def after(run: SceneRun, offset: float, timeout: float = 10.0) -> None:
    """Wait until the run's clock has passed `offset` seconds."""
    wait_until(lambda: time.time() - run.started_at >= offset, timeout,
               what=f"{offset}s into the scene")


def deviations(arrived: list[float], planned: list[float]) -> list[float]:
    """Each arrival's error against its planned offset, the common transit delay removed.

    The reference is the median of (arrival - planned), not the first arrival, so one
    late message on a busy machine does not shift all the others.
    """
    diffs = [a - p for a, p in zip(arrived, planned, strict=True)]
    reference = statistics.median(diffs)
    return [d - reference for d in diffs]


def arrivals(rec: Recorder, prefix: str = "room1/") -> list[tuple[str, str, float]]:
    with rec.lock:
        return [(m.topic, m.payload.decode(), m.at) for m in rec.messages
                if m.topic.startswith(prefix) and m.topic != "room1/status"]


def test_every_command_arrives_in_order_at_its_offset(rig: Rig, recorder: Recorder) -> None:
    s = scene(act(0, "room1/light", "ON", feedback=NONE),
              act(0.3, "room1/door", "OPEN", feedback=NONE),
              act(0.3, "room1/smoke", "PUFF", feedback=NONE),
              act(0.75, "room1/motor", "START", feedback=NONE),
              act(1.2, "room1/light", "OFF", feedback=NONE))
    run = rig.play(s)
    assert rig.player.wait(10)
    got = recorder.wait_for("room1/light", "OFF")
    assert got
    seen = arrivals(recorder)
    assert [(t, p) for t, p, _ in seen] == [(a.topic, a.message) for a in s.actions]
    errors = deviations([at for _, _, at in seen], [a.at for a in s.actions])
    assert max(abs(e) for e in errors) < TOLERANCE, errors
    assert run.outcome is Outcome.COMPLETED
    assert [r.delivery for r in run.records] == [Delivery.SENT] * 5
    assert all(abs(r.lateness or 1) < TOLERANCE for r in run.records)
    assert all(r.feedback is FeedbackStatus.NONE for r in run.records)


def test_stop_cancels_later_cues_and_runs_on_stop_and_safe_state(
        rig: Rig, recorder: Recorder) -> None:
    s = scene(act(0, "room1/light", "ON", feedback=NONE),
              act(1.0, "room1/steam", "ON", feedback=NONE),
              act(2.0, "room1/motor", "START", feedback=NONE),
              act(2.5, "room1/light", "OFF", feedback=NONE),
              on_stop=(act(0, "room1/steam", "OFF"),))
    events: list[str] = []
    rig.player.add_listener(lambda e, _r: events.append(e))
    run = rig.play(s)
    recorder.wait_for("room1/steam", "ON")
    after(run, 1.5)
    rig.player.stop()
    recorder.wait_for("room1/steam", "OFF")
    recorder.wait_for("room1/fog", "OFF")
    assert rig.player.wait(1)
    after(run, 2.5 + 4 * TOLERANCE)
    assert recorder.payloads("room1/motor") == []
    assert recorder.payloads("room1/light") == ["ON"]
    assert run.outcome is Outcome.STOPPED
    assert [r.delivery for r in run.records[:4]] == [
        Delivery.SENT, Delivery.SENT, Delivery.CANCELLED, Delivery.CANCELLED]
    assert [(r.label, r.delivery) for r in run.records[4:]] == [
        ("on_stop", Delivery.SENT), ("safe_state", Delivery.SENT)]
    wait_until(lambda: events.count("finished") == 1, 2, what="finished event")


def test_stop_cancels_a_cue_already_handed_to_the_pool(
        mosquitto: Mosquitto, recorder: Recorder, tmp_path: Path) -> None:
    # Woken 0.8 s early, the 1.0 s cue's job is already running (waiting) at 0.5 s.
    r, close = make_rig(mosquitto, SimulatedMedia(tmp_path), tmp_path, early_wake=0.8)
    try:
        run = r.play(scene(act(0, "room1/light", "ON", feedback=NONE),
                           act(1.0, "room1/motor", "START", feedback=NONE)))
        recorder.wait_for("room1/light", "ON")
        after(run, 0.5)
        r.player.stop()
        recorder.wait_for("room1/fog", "OFF")
        after(run, 1.0 + 4 * TOLERANCE)
        assert recorder.payloads("room1/motor") == []
        assert run.records[1].delivery is Delivery.CANCELLED
    finally:
        close()


def test_a_looped_scene_does_not_drift(rig: Rig, recorder: Recorder) -> None:
    s = scene(act(0, "room1/light", "ON", feedback=NONE),
              act(0.2, "room1/light", "OFF", feedback=NONE),
              duration=0.5, rounds=3)
    run = rig.play(s)
    assert rig.player.wait(10)
    got = recorder.wait_for("room1/light", count=6)
    times = [m.at for m in got]
    planned = [k * 0.5 + at for k in range(3) for at in (0, 0.2)]
    errors = deviations(times, planned)
    assert max(abs(e) for e in errors) < TOLERANCE, errors
    # Round 3 against round 1: the same offsets, with no error accumulated per round.
    assert abs((times[4] - times[0]) - 1.0) < TOLERANCE
    assert abs((times[5] - times[1]) - 1.0) < TOLERANCE
    assert [r.round for r in run.records] == [0, 0, 1, 1, 2, 2]
    assert [round(r.planned, 3) for r in run.records] == planned
    assert max(abs(r.lateness or 1) for r in run.records) < TOLERANCE
    assert run.outcome is Outcome.COMPLETED


def test_confirmed_feedback_completes_the_run_with_latencies(
        rig: Rig, recorder: Recorder, mosquitto: Mosquitto) -> None:
    device = Device(mosquitto, ["room1/light", "room1/steam"])
    try:
        run = rig.play(scene(act(0, "room1/light", "ON"),
                             act(0.2, "room1/steam", "ON", feedback=FeedbackPolicy.REQUIRED)))
        assert rig.player.wait(10)
    finally:
        device.close()
    assert run.outcome is Outcome.COMPLETED
    assert [r.feedback for r in run.records] == [FeedbackStatus.OK, FeedbackStatus.OK]
    assert all(0 < (r.feedback_latency or -1) < 0.5 for r in run.records)


def test_an_unanswered_expected_feedback_fails_the_run(rig: Rig, recorder: Recorder) -> None:
    run = rig.play(scene(act(0, "room1/light", "ON"), act(0.1, "room1/x", "Y", feedback=NONE)))
    assert rig.player.wait(10)
    assert run.outcome is Outcome.FEEDBACK_FAILED
    assert run.records[0].feedback is FeedbackStatus.TIMEOUT
    assert run.records[1].delivery is Delivery.SENT


@pytest.mark.parametrize("answer", ["ERROR", None])
def test_a_failed_required_feedback_stops_into_the_safe_state(
        rig: Rig, recorder: Recorder, mosquitto: Mosquitto, answer: str | None) -> None:
    device = Device(mosquitto, ["room1/steam"], answer) if answer else None
    try:
        run = rig.play(scene(
            act(0, "room1/steam", "ON", feedback=FeedbackPolicy.REQUIRED),
            act(1.5, "room1/motor", "START", feedback=NONE),
            on_stop=(act(0, "room1/steam", "OFF"),)))
        recorder.wait_for("room1/steam", "OFF")
        recorder.wait_for("room1/fog", "OFF")
        assert rig.player.wait(5)
    finally:
        if device:
            device.close()
    assert run.outcome is Outcome.ABORTED
    assert run.records[0].feedback is (FeedbackStatus.ERROR if answer else
                                       FeedbackStatus.TIMEOUT)
    assert run.records[1].delivery is Delivery.CANCELLED
    after(run, 1.5 + 4 * TOLERANCE)
    assert recorder.payloads("room1/motor") == []


def test_a_required_command_not_sent_stops_into_the_safe_state(
        rig: Rig, mosquitto: Mosquitto) -> None:
    # The broker is lost: `required` steam was recorded `not sent` and the scene went on,
    # so the motor would have started once the broker was back.
    mosquitto.kill()
    wait_until(lambda: not rig.client.connected, 5, what="the runner to see the drop")
    run = rig.play(scene(act(0, "room1/steam", "ON", feedback=FeedbackPolicy.REQUIRED),
                         act(0.5, "room1/motor", "START", feedback=NONE),
                         on_stop=(act(0, "room1/steam", "OFF"),)))
    assert rig.player.wait(5)
    assert run.outcome is Outcome.ABORTED
    assert [(r.topic, r.delivery) for r in run.records] == [
        ("room1/steam", Delivery.NOT_SENT), ("room1/motor", Delivery.CANCELLED),
        ("room1/steam", Delivery.NOT_SENT), ("room1/fog", Delivery.NOT_SENT)]


def test_mode_single_refuses_a_second_start(rig: Rig, recorder: Recorder) -> None:
    s = scene(act(0, "room1/a", "1", feedback=NONE), act(0.5, "room1/a", "2", feedback=NONE))
    rig.play(s)
    assert rig.player.play(s) is None
    assert rig.player.wait(5)
    recorder.wait_for("room1/a", "2")
    assert recorder.payloads("room1/a") == ["1", "2"]


def test_mode_queue_plays_after_the_running_scene(rig: Rig, recorder: Recorder) -> None:
    first = scene(act(0, "room1/a", "1", feedback=NONE), act(0.4, "room1/a", "2", feedback=NONE))
    second = scene(act(0, "room1/a", "3", feedback=NONE), sid="second", mode=Mode.QUEUE)
    run1 = rig.play(first)
    run2 = rig.play(second)
    assert rig.player.wait(5)
    recorder.wait_for("room1/a", "3")
    assert recorder.payloads("room1/a") == ["1", "2", "3"]
    assert run1.outcome is Outcome.COMPLETED and run2.outcome is Outcome.COMPLETED
    assert run2.started_at >= (run1.ended_at or 0) - TOLERANCE


def test_mode_restart_stops_the_running_scene_first(rig: Rig, recorder: Recorder) -> None:
    s = scene(act(0, "room1/a", "1", feedback=NONE), act(0.6, "room1/a", "2", feedback=NONE),
              on_stop=(act(0, "room1/a", "safe"),), mode=Mode.RESTART)
    run1 = rig.play(s)
    recorder.wait_for("room1/a", "1")
    run2 = rig.play(s)
    assert rig.player.wait(5)
    recorder.wait_for("room1/a", "2")
    assert recorder.payloads("room1/a") == ["1", "safe", "1", "2"]
    assert run1.outcome is Outcome.STOPPED and run2.outcome is Outcome.COMPLETED


def test_a_late_answer_to_on_stop_does_not_confirm_the_restarted_runs_command(
        rig: Rig, recorder: Recorder) -> None:
    """Plain OKs resolve the oldest pending command: the on_stop command must be it."""
    s = scene(act(0, "room1/light", "ON"), act(1.0, "room1/x", "end", feedback=NONE),
              on_stop=(act(0, "room1/light", "OFF"),), mode=Mode.RESTART)
    rig.play(s)
    recorder.wait_for("room1/light", "ON")
    run2 = rig.play(s)
    recorder.wait_for("room1/light", "ON", count=2)
    # The device answers the on_stop `OFF` late; nobody answers run 2's `ON`.
    recorder.client.publish("room1/status", "OK", qos=1).wait_for_publish(5)
    assert rig.player.wait(5)
    assert recorder.payloads("room1/light") == ["ON", "OFF", "ON"]
    assert run2.records[0].feedback is FeedbackStatus.TIMEOUT
    assert run2.outcome is Outcome.FEEDBACK_FAILED


def test_panic_when_idle_applies_the_room_safe_state(rig: Rig, recorder: Recorder) -> None:
    rig.player.panic()
    recorder.wait_for("room1/fog", "OFF")


def test_state_shows_the_next_cue_while_playing(rig: Rig, recorder: Recorder) -> None:
    assert rig.player.state() is None
    run = rig.play(scene(act(0, "room1/a", "1", feedback=NONE),
                         act(1.0, "room1/a", "2", feedback=NONE, label="Second")))
    recorder.wait_for("room1/a", "1")
    st = rig.player.state()
    assert isinstance(st, PlayerSnapshot)
    assert st.scene == "test" and st.run_id == run.run_id
    assert st.next_cue is not None and st.next_cue.label == "Second"
    assert 0 <= st.elapsed < 1.0
    assert rig.player.wait(5)
    assert rig.player.state() is None


def test_each_record_gets_its_seq_once_in_the_order_it_is_reported(
        rig: Rig, recorder: Recorder) -> None:
    seen: list[tuple[str, int]] = []
    rig.player.add_record_listener(lambda event, _run, rec: seen.append((event, rec.seq)))
    run = rig.play(scene(act(0, "room1/a", "1", feedback=NONE),
                         act(5.0, "room1/a", "2", feedback=NONE)))
    recorder.wait_for("room1/a", "1")
    wait_until(lambda: run.records[0].seq >= 0, what="the first cue reported")
    rig.player.stop()  # the room's safe state (fog OFF) goes out; the 5 s cue is cancelled
    assert rig.player.wait(5)
    # Fired, then the safe state when stopped, then the cancelled cue as the run closes.
    assert [(r.topic, r.delivery, r.seq) for r in run.records] == [
        ("room1/a", Delivery.SENT, 0), ("room1/a", Delivery.CANCELLED, 2),
        ("room1/fog", Delivery.SENT, 1)]
    wait_until(lambda: len(seen) == 2, what="both reports")
    assert seen == [("action", 0), ("action", 1)]
    assert "seq" not in run.records[0].to_json()  # the JSON shape is unchanged


def test_state_renders_exactly_the_json_of_a_known_run(rig: Rig, recorder: Recorder) -> None:
    """The dashboard and `runner play` read this shape: keys, order and values pinned."""
    assert player_state_json(rig.player.state()) == {"scene": None}
    run = rig.play(scene(act(0, "room1/a", "1", feedback=NONE),
                         act(5.0, "room1/a", "2", feedback=NONE, label="Second")))
    recorder.wait_for("room1/a", "1")

    def first_sent() -> PlayerSnapshot | None:
        st = rig.player.state()
        return st if st is not None and st.records[0].delivery is not None else None

    wait_until(lambda: first_sent() is not None, 5, what="the first cue recorded")
    snap = first_sent()
    assert snap is not None
    st = player_state_json(snap)
    elapsed, nxt = st["elapsed"], st["next_cue"]
    assert isinstance(elapsed, float) and 0 <= elapsed < 5.0
    assert isinstance(nxt, dict) and nxt["in"] == round(5.0 - elapsed, 3)
    records = st["records"]
    assert isinstance(records, list)
    actual = records[0]["actual"]
    assert isinstance(actual, float)
    expected = {
        "scene": "test", "name": "Test", "run_id": run.run_id, "started_at": run.started_at,
        "elapsed": elapsed, "duration": 5.0, "round": 0,
        "next_cue": {"at": 5.0, "in": nxt["in"], "topic": "room1/a", "message": "2",
                     "label": "Second"},
        "records": [
            {"index": 0, "round": 0, "planned": 0.0, "topic": "room1/a", "message": "1",
             "route": "mqtt", "label": None, "actual": actual, "delivery": "sent",
             "feedback": "none", "feedback_latency": None, "error": None,
             "lateness": actual},
            {"index": 1, "round": 0, "planned": 5.0, "topic": "room1/a", "message": "2",
             "route": "mqtt", "label": "Second", "actual": None, "delivery": None,
             "feedback": "none", "feedback_latency": None, "error": None,
             "lateness": None},
        ],
    }
    assert json.dumps(st) == json.dumps(expected)  # the same keys in the same order
    assert player_state_json(rig.player.state(records=False))["records"] == []
    rig.player.stop()
    assert rig.player.wait(5)
    assert player_state_json(rig.player.state()) == {"scene": None}


class Subscriber:
    """A fresh paho subscriber on '#', subscribed before the constructor returns."""

    def __init__(self, broker: Mosquitto, name: str) -> None:
        self.messages: list[tuple[str, str, float]] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name)
        self.client.reconnect_delay_set(60, 60)  # one connection: no silent comeback
        ready = threading.Event()
        self.client.on_connect = lambda c, *_: c.subscribe("#", 1)
        self.client.on_subscribe = lambda *_: ready.set()
        self.client.on_message = lambda _c, _u, m: self.messages.append(
            (m.topic, m.payload.decode(), time.monotonic()))
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert ready.wait(5), f"{name} could not subscribe"

    def payloads(self, topic: str) -> list[str]:
        return [p for t, p, _ in list(self.messages) if t == topic]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_commands_due_while_the_broker_is_away_are_never_sent_late(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    # Reconnect attempts at +0.1, +0.3, +0.7, +1.5 s after the drop: the broker is back
    # at about +0.9 s, so the test's subscriber is listening before the runner returns.
    r, close = make_rig(mosquitto, SimulatedMedia(tmp_path), tmp_path, max_backoff=0.8)
    before = Subscriber(mosquitto, "test-before")
    late: Subscriber | None = None
    step = 0.2
    try:
        s = scene(*(act(round(i * step, 3), "room1/seq", str(i), feedback=NONE)
                    for i in range(21)))
        run = r.play(s)
        wait_until(lambda: "5" in before.payloads("room1/seq"), 5, what="cue 5 (1.0 s)")
        mosquitto.kill()
        wait_until(lambda: not r.client.connected, 2, what="the runner to see the drop")
        after(run, 1.9)
        mosquitto.start()
        late = Subscriber(mosquitto, "test-after")
        assert not r.client.connected, "the runner came back before the test listened"
        wait_until(lambda: r.client.connected, 5, what="the runner to reconnect")
        assert r.player.wait(10)
        wait_until(lambda: "20" in late.payloads("room1/seq"), 2, what="the last cue")
    finally:
        close()
        before.close()
        if late:
            late.close()
    not_sent = [rec for rec in run.records if rec.delivery is Delivery.NOT_SENT]
    sent_after = [rec for rec in run.records if rec.delivery is Delivery.SENT
                  and rec.planned > 1.1]
    assert len(not_sent) >= 4, [(x.planned, x.delivery) for x in run.records]
    assert all(1.0 < x.planned < 2.6 for x in not_sent)
    # Never delivered when the broker came back, and the later ones are.
    assert not {x.message for x in not_sent} & set(late.payloads("room1/seq"))
    assert [x.message for x in sent_after] == late.payloads("room1/seq")
    assert len(sent_after) >= 5
    # The scene kept its time through the outage.
    assert max(abs(x.lateness or 1) for x in run.records) < TOLERANCE
    assert run.outcome is Outcome.FEEDBACK_FAILED  # NOT_SENT cues are failures


def test_a_cue_job_that_misses_its_moment_is_logged_and_recorded_not_sent(
        mosquitto: Mosquitto, recorder: Recorder, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    # Woken 2 s early, the cue at 0 s would have had to start 1.9 s ago: more than the
    # 1 s grace, so APScheduler reports it missed, as it would after a frozen machine.
    r, close = make_rig(mosquitto, SimulatedMedia(tmp_path), tmp_path, early_wake=2.0)
    try:
        with caplog.at_level("ERROR", logger="player"):
            run = r.play(scene(act(0, "room1/early", "X", feedback=NONE),
                               act(1.5, "room1/late", "Y", feedback=NONE)))
            assert r.player.wait(10)
        recorder.wait_for("room1/late", "Y")
    finally:
        close()
    assert recorder.payloads("room1/early") == []
    assert run.records[0].delivery is Delivery.NOT_SENT
    assert "missed its moment" in (run.records[0].error or "")
    assert run.records[1].delivery is Delivery.SENT
    assert "missed their moment" in caplog.text
    assert run.outcome is Outcome.FEEDBACK_FAILED


def test_a_scene_looping_forever_keeps_time_until_stopped(
        mosquitto: Mosquitto, recorder: Recorder, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("runner.player.KEEP_ROUNDS", 3)
    r, close = make_rig(mosquitto, SimulatedMedia(tmp_path), tmp_path)
    try:
        run = r.play(scene(act(0, "room1/tick", "T", feedback=NONE), duration=0.2,
                           rounds=None))
        recorder.wait_for("room1/tick", count=8, timeout=10)
        r.player.stop()
        recorder.wait_for("room1/fog", "OFF")
    finally:
        close()
    ticks = [m.at for m in recorder.on("room1/tick")]
    errors = deviations(ticks, [0.2 * i for i in range(len(ticks))])
    assert max(abs(e) for e in errors) < TOLERANCE, errors
    assert max(abs(rec.lateness or 0) for rec in run.records) < TOLERANCE
    assert run.outcome is Outcome.STOPPED
    assert len({rec.round for rec in run.records if rec.index >= 0}) <= 5


def test_a_cues_lateness_is_taken_after_its_publish_was_handed_over(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    """The runner's lateness must be what a subscriber sees, not the moment it began."""
    offset = [0.0]
    r, close = make_rig(mosquitto, SimulatedMedia(tmp_path), tmp_path,
                        clock=lambda: time.monotonic() + offset[0])
    real = r.client.publish

    def slow_publish(*args: Any, **kw: Any) -> Delivery:
        delivery = real(*args, **kw)
        offset[0] += 5.0  # the hand-off to the socket "took" 5 s on the player's clock
        return delivery

    r.client.publish = slow_publish  # type: ignore[method-assign]
    try:
        run = r.play(scene(act(0, "room1/light", "ON", feedback=NONE), duration=0.2))
        assert r.player.wait(10)
        [rec] = run.records
        assert rec.delivery is Delivery.SENT
        assert rec.lateness is not None and rec.lateness >= 5.0
    finally:
        close()
