"""The dashboard's JSON API and live feed: auth, every endpoint's shape, nothing changes on GET.

The room behind the app is assembled from the real parts (MQTT client on the test
mosquitto, device registry, feedback tracker, player with libvlc, run history), wired
as the room service wires them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx2
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from starlette.applications import Starlette
from starlette.testclient import TestClient

from runner.errors import RunnerError
from runner.history import RunHistory
from runner.media import open_backend
from runner.model import Action, Config, DashboardConfig, FeedbackPolicy, Scene, Show
from runner.mqtt.stack import ClientSetup, build_mqtt_stack
from runner.player import Player
from runner.ratelimitlog import RateLimitedLog
from runner.records import SceneRun
from runner.shows import next_starts
from runner.web.app import create_app
from runner.web.auth import SESSION_COOKIE, Auth
from runner.web.server import DashboardServer
from tests.brokers import Mosquitto
from tests.conftest import Recorder, wait_until

TOKEN = "s3cret-token-for-tests-0123456789"
LOCAL = ("127.0.0.1", 50000)
REMOTE = ("10.1.2.3", 1234)
BASE = "http://127.0.0.1:8080"


def scene(scene_id: str = "intro", *actions: Action, duration: float | None = None,
          on_stop: tuple[Action, ...] = ()) -> Scene:
    acts = actions or (
        Action(at=0.0, topic="room1/light", message="ON", label="Lights up"),
        Action(at=0.0, topic="room1/fog", message="ON", feedback=FeedbackPolicy.NONE),
        Action(at=0.2, topic="room1/motor", message="START"),
    )
    return Scene(id=scene_id, name=f"Scene {scene_id}", room="room1", actions=acts,
                 duration=duration if duration is not None else max(a.at for a in acts),
                 on_stop=on_stop)


class LabRoom:
    """The room service's wiring of the real parts, for driving the app in-process."""

    def __init__(self, config: Config, scenes: dict[str, Scene], tmp: Path) -> None:
        self.config = config
        self.scenes = scenes
        setup = replace(ClientSetup.from_config(config), client_id="dashboard-test-room",
                        connect_retries=1, retry_delay=0.1, presence_topic=None)
        mqtt = build_mqtt_stack(config, scenes, client=setup)
        self.client, self.registry, self.tracker = mqtt.client, mqtt.registry, mqtt.tracker
        self.handler = mqtt.handler
        self.media = open_backend(tmp, dummy=True)
        self.player = Player(self.client, self.tracker, self.media, config)
        self.history = RunHistory(tmp / "history.sqlite3")
        self.listeners: list[Callable[[], None]] = []
        self.registry.add_listener(lambda _d: self._changed())
        self.tracker.add_result_listener(lambda _r: self._changed())
        self.player.add_listener(self._on_player)

    def _on_player(self, event: str, run: SceneRun) -> None:
        if event == "started":
            self.history.record_start(run)
        elif event == "finished":
            self.history.record_end(run)
        else:
            self.history.record_changes(run)
        self._changed()

    def _changed(self) -> None:
        for cb in list(self.listeners):
            cb()

    def add_change_listener(self, cb: Callable[[], None]) -> None:
        self.listeners.append(cb)

    def next_shows(self) -> list[tuple[Show, datetime | None]]:
        return next_starts(self.config)

    def play(self, scene_id: str, trigger: str) -> SceneRun | None:
        return self.player.play(self.scenes[scene_id], trigger)

    def stop(self) -> None:
        self.player.stop()

    def panic(self) -> None:
        self.player.panic()

    def close(self) -> None:
        self.player.shutdown()
        self.tracker.close()
        self.client.disconnect()
        self.media.close()
        self.history.close()


def make_config(mosquitto: Mosquitto, tmp: Path, **dashboard: Any) -> Config:
    return Config(
        room="room1",
        broker=replace(Config(room="room1").broker, host=mosquitto.host, port=mosquitto.port),
        scenes_dir=tmp, media_dir=tmp, feedback_timeout=0.3,
        dashboard=DashboardConfig(**{"token": TOKEN, **dashboard}),
        shows=(Show(scene="intro", time="10:00"), Show(scene="intro", cron="30 14 * * *")),
        safe_state=(Action(at=0.0, topic="room1/steam", message="OFF",
                           feedback=FeedbackPolicy.NONE),),
        timezone="Asia/Tokyo",
        source=tmp / "runner.yaml",
    )


@pytest.fixture
def lab(mosquitto: Mosquitto, tmp_path: Path) -> Iterator[Callable[..., LabRoom]]:
    made: list[LabRoom] = []

    def build(**dashboard: Any) -> LabRoom:
        config = make_config(mosquitto, tmp_path, **dashboard)
        workdir = tmp_path / f"room{len(made)}"
        workdir.mkdir()
        room = LabRoom(config, {"intro": scene("intro"), "finale": scene("finale")}, workdir)
        assert room.client.connect(), "the lab room could not reach the test broker"
        made.append(room)
        return room

    yield build
    for room in made:
        room.close()


@pytest.fixture
def room(lab: Callable[..., LabRoom]) -> LabRoom:
    return lab()


@pytest.fixture
def app(room: LabRoom) -> Starlette:
    return create_app(room)


def local(app: Starlette, **kw: Any) -> TestClient:
    return TestClient(app, base_url=BASE, client=LOCAL, **kw)


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def answer_ok(mosquitto: Mosquitto, topic: str = "room1/status", payload: str = "OK") -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="dashboard-test-device")
    c.connect(mosquitto.host, mosquitto.port)
    c.loop_start()
    c.publish(topic, payload, qos=1).wait_for_publish(5)
    c.loop_stop()
    c.disconnect()


# -- reads ---------------------------------------------------------------------------

READ_PATHS = ["/api/status", "/api/devices", "/api/scene", "/api/failures", "/api/shows",
              "/api/history", "/api/scenes", "/api/snapshot"]


def test_every_read_endpoint_has_its_shape(room: LabRoom, app: Starlette,
                                           mosquitto: Mosquitto, recorder: Recorder) -> None:
    room.registry.update_device_status("esp32_01", "online")
    room.registry.update_device_status("esp32_02", "offline")
    run = room.play("intro", "test")
    assert run is not None
    recorder.wait_for("room1/light", "ON")
    answer_ok(mosquitto)  # confirms the light; the motor times out (0.3 s)
    assert room.player.wait(5)
    room.play("finale", "test")  # playing again, so /api/scene has a scene
    c = local(app)

    status = c.get("/api/status").json()
    assert status["room"] == "room1"
    assert status["timezone"] == "Asia/Tokyo"
    assert status["now"].endswith("+09:00")
    assert status["broker"]["connected"] is True
    assert status["broker"]["address"] == mosquitto.address
    assert status["devices"] == {"online": 1, "total": 2}
    assert status["playing"] == "finale"

    devices = c.get("/api/devices").json()["devices"]
    assert [(d["id"], d["online"], d["state"]) for d in devices] == [
        ("esp32_01", True, "online"), ("esp32_02", False, "offline")]
    assert devices[0]["last_seen"].endswith("+09:00")  # the room's timezone, not UTC

    sc = c.get("/api/scene").json()
    assert sc["playing"] is True and sc["scene"] == "finale" and sc["name"] == "Scene finale"
    assert sc["duration"] == pytest.approx(0.2) and sc["round"] == 1
    assert [cue["topic"] for cue in sc["cues"]] == ["room1/light", "room1/fog", "room1/motor"]
    assert sc["cues"][0]["label"] == "Lights up"
    assert sc["cues"][1]["feedback"] == "none"
    assert {cue["state"] for cue in sc["cues"]} <= {
        "waiting", "pending", "ok", "no-feedback", "timeout", "error"}

    failures = c.get("/api/failures").json()["failures"]
    motor = [f for f in failures if f["topic"] == "room1/motor"]
    assert motor and motor[0]["status"] == "TIMEOUT" and motor[0]["message"] == "START"
    assert motor[0]["time"].endswith("+09:00")
    assert all(f["topic"] != "room1/light" for f in failures)  # confirmed, not a failure

    shows = c.get("/api/shows").json()["shows"]
    assert {s["rule"] for s in shows} == {"10:00 daily", "cron 30 14 * * *"}
    assert all(s["scene"] == "intro" and s["next"].endswith("+09:00") for s in shows)
    assert shows == sorted(shows, key=lambda s: s["next"])  # soonest first

    runs = c.get("/api/history").json()["runs"]
    first = next(r for r in runs if r["run_id"] == run.run_id)
    assert first["scene"] == "intro" and first["outcome"] == "feedback failed"
    assert [f["topic"] for f in first["failures"]] == ["room1/motor"]
    assert "records" not in first  # kept small; `runner history` has the detail

    scenes = c.get("/api/scenes").json()["scenes"]
    assert [(s["id"], s["name"], s["cues"]) for s in scenes] == [
        ("finale", "Scene finale", 3), ("intro", "Scene intro", 3)]

    snap = c.get("/api/snapshot").json()
    assert set(snap) == {"status", "devices", "scene", "failures", "shows", "history", "scenes"}
    assert snap["devices"]["devices"] == devices


def test_cues_turn_ok_no_feedback_and_timeout(room: LabRoom, app: Starlette,
                                              mosquitto: Mosquitto, recorder: Recorder) -> None:
    room.scenes["long"] = scene(
        "long",
        Action(at=0.0, topic="room1/light", message="ON"),
        Action(at=0.0, topic="room1/fog", message="ON", feedback=FeedbackPolicy.NONE),
        Action(at=0.0, topic="room1/motor", message="START"),
        Action(at=30.0, topic="room1/door", message="OPEN"),
    )
    room.play("long", "test")
    c = local(app)
    recorder.wait_for("room1/motor", "START")
    answer_ok(mosquitto)  # the oldest pending on room1/status: the light

    def states() -> list[str]:
        return [cue["state"] for cue in c.get("/api/scene").json()["cues"]]

    wait_until(lambda: states() == ["ok", "no-feedback", "timeout", "waiting"], 5,
               what="light OK, fog grey, motor TIMEOUT, door still to come")
    cue = c.get("/api/scene").json()["cues"][0]
    assert cue["latency"] is not None and cue["latency"] >= 0
    room.stop()


def test_idle_scene_view(app: Starlette) -> None:
    assert local(app).get("/api/scene").json() == {"playing": False, "scene": None, "cues": []}


def test_reads_from_another_host_need_the_token(app: Starlette) -> None:
    remote = TestClient(app, base_url="http://192.168.1.20:8080", client=REMOTE)
    for path in [*READ_PATHS, "/api/events"]:
        r = remote.get(path)
        assert r.status_code == 401, path
        assert "dashboard token" in r.json()["error"] and "10.1.2.3" in r.json()["error"]
    assert remote.get("/api/status", headers=bearer()).status_code == 200
    assert remote.get("/api/status", headers=bearer("wrong")).status_code == 401
    # the page itself holds no room data: it loads, to show the login form
    page = remote.get("/")
    assert page.status_code == 200 and 'id="login-form"' in page.text
    session = remote.get("/api/session").json()
    assert session == {"authorized": False, "token_configured": True,
                       "reads_allowed": False, "room": "room1"}


def test_public_reads_allow_reads_but_not_control(lab: Callable[..., LabRoom]) -> None:
    app = create_app(lab(public_reads=True))
    remote = TestClient(app, base_url="http://192.168.1.20:8080", client=REMOTE)
    assert remote.get("/api/devices").status_code == 200
    assert remote.post("/api/stop").status_code == 401


def test_loopback_client_with_a_foreign_host_name_is_refused(app: Starlette) -> None:
    # DNS rebinding: a web page whose name now points at 127.0.0.1 reads nothing
    rebound = TestClient(app, base_url="http://attacker.example:8080", client=LOCAL)
    assert rebound.get("/api/status").status_code == 401
    assert TestClient(app, base_url="http://localhost:8080", client=LOCAL) \
        .get("/api/status").status_code == 200


# -- control -------------------------------------------------------------------------

def test_play_needs_the_token_and_then_reaches_the_broker(room: LabRoom, app: Starlette,
                                                          recorder: Recorder) -> None:
    c = local(app)
    for headers in ({}, bearer("wrong-token")):
        r = c.post("/api/play", json={"scene": "intro"}, headers=headers)
        assert r.status_code == 401
        assert "dashboard token" in r.json()["error"]
    assert room.player.state() is None
    r = c.post("/api/play", json={"scene": "intro"}, headers=bearer())
    assert r.status_code == 200
    body = r.json()
    assert body["started"] is True and body["scene"] == "intro" and len(body["run_id"]) > 4
    recorder.wait_for("room1/light", "ON")
    # refused requests sent nothing: exactly one light command on the broker
    assert recorder.payloads("room1/light") == ["ON"]


def test_play_errors_say_what_to_do(room: LabRoom, app: Starlette) -> None:
    c = local(app, headers=bearer())
    r = c.post("/api/play", json={"scene": "intor"})
    assert r.status_code == 404 and "Did you mean 'intro'" in r.json()["error"]
    r = c.post("/api/play", json={})
    assert r.status_code == 400 and "/api/scenes" in r.json()["error"]
    r = c.post("/api/play", content=b"not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]
    room.scenes["long"] = scene("long", Action(at=30.0, topic="room1/door", message="OPEN"))
    assert c.post("/api/play", json={"scene": "long"}).status_code == 200
    r = c.post("/api/play", json={"scene": "intro"})
    assert r.status_code == 409 and "stop it first" in r.json()["error"]
    assert c.post("/api/stop").json() == {"stopped": True}
    assert room.player.wait(5)


def test_stop_and_panic_send_the_safe_state(room: LabRoom, app: Starlette,
                                            recorder: Recorder) -> None:
    c = local(app, headers=bearer())
    room.scenes["long"] = scene("long", Action(at=30.0, topic="room1/door", message="OPEN"),
                                on_stop=(Action(at=0, topic="room1/door", message="CLOSE",
                                                feedback=FeedbackPolicy.NONE),))
    assert c.post("/api/play", json={"scene": "long"}).status_code == 200
    assert c.post("/api/stop").status_code == 200
    recorder.wait_for("room1/door", "CLOSE")
    recorder.wait_for("room1/steam", "OFF")
    assert room.player.wait(5)
    assert c.post("/api/panic").json() == {"panic": True}
    recorder.wait_for("room1/steam", "OFF", count=2)  # panic applies it even when idle


def test_login_sets_a_strict_httponly_signed_cookie(app: Starlette, room: LabRoom,
                                                    recorder: Recorder) -> None:
    c = local(app)
    r = c.post("/api/login", json={"token": "nope"})
    assert r.status_code == 401 and "set-cookie" not in r.headers
    r = c.post("/api/login", json={"token": TOKEN})
    assert r.status_code == 200
    cookie = r.headers["set-cookie"]
    attrs = [a.strip().lower() for a in cookie.split(";")]
    assert "httponly" in attrs and "samesite=strict" in attrs and "path=/" in attrs
    assert any(a.startswith("max-age=") for a in attrs)
    assert "secure" not in attrs  # plain http on the room's LAN: Secure would drop it
    value = c.cookies[SESSION_COOKIE]
    assert TOKEN not in cookie and len(value.split(".")) == 3
    assert c.get("/api/session").json()["authorized"] is True
    assert c.post("/api/panic").status_code == 200
    recorder.wait_for("room1/steam", "OFF")

    forged = local(app, cookies={SESSION_COOKIE: value[:-4] + "0000"})
    assert forged.post("/api/panic").status_code == 401

    assert c.post("/api/logout").status_code == 200
    replayed = local(app, cookies={SESSION_COOKIE: value})
    assert replayed.post("/api/panic").status_code == 401  # logged out means ended


def test_session_cookie_expires() -> None:
    now = [1000.0]
    auth = Auth(TOKEN, session_ttl=60, clock=lambda: now[0])
    cookie = auth.new_session()
    assert auth.session_valid(cookie)
    now[0] += 61
    assert not auth.session_valid(cookie)
    assert not Auth(TOKEN).session_valid(cookie)  # another process: another secret


def test_cross_site_posts_are_refused(app: Starlette, room: LabRoom) -> None:
    c = local(app, headers=bearer())
    r = c.post("/api/panic", headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and "another web site" in r.json()["error"]
    r = c.post("/api/stop", headers={"Origin": "null"})
    assert r.status_code == 403
    r = c.post("/api/stop", headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    assert c.post("/api/login", json={"token": TOKEN},
                  headers={"Origin": "http://evil.example"}).status_code == 403
    assert c.post("/api/stop", headers={"Origin": BASE}).status_code == 200


def test_without_a_configured_token_control_is_refused(lab: Callable[..., LabRoom],
                                                       recorder: Recorder) -> None:
    app = create_app(lab(token=None))
    c = local(app)
    for path in ("/api/play", "/api/stop", "/api/panic", "/api/login"):
        r = c.post(path, json={"scene": "intro", "token": ""}, headers=bearer(""))
        assert r.status_code == 403, path
        assert "no dashboard token is configured" in r.json()["error"]
        assert "runner.yaml" in r.json()["error"]
    assert c.get("/api/session").json()["token_configured"] is False
    assert c.get("/api/status").status_code == 200  # local reads still work
    assert recorder.payloads("room1/steam") == []


def test_wrong_tokens_are_rate_limited(room: LabRoom) -> None:
    app = create_app(room, auth=Auth(TOKEN, login_attempts=3))
    c = local(app)
    for _ in range(3):
        assert c.post("/api/login", json={"token": "guess"}).status_code == 401
    r = c.post("/api/login", json={"token": TOKEN})
    assert r.status_code == 429 and "wait a minute" in r.json()["error"]


def test_wrong_bearer_tokens_are_rate_limited_and_logged(room: LabRoom, recorder: Recorder,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dashboard")
    app = create_app(room, auth=Auth(TOKEN, login_attempts=5))
    c = local(app)
    guesses = [f"guess-{i:03d}-{TOKEN[:3]}" for i in range(300)]
    codes = [c.post("/api/stop", headers=bearer(g)).status_code for g in guesses]
    assert codes[:5] == [401] * 5 and set(codes[5:]) == {429}
    r = c.post("/api/stop", headers=bearer())  # even the right token waits out the window
    assert r.status_code == 429 and "wait a minute" in r.json()["error"]
    assert 1 <= int(r.headers["retry-after"]) <= 60
    # reads and /api/session answer "is this the token?" too, so they are limited alike
    assert c.get("/api/session", headers=bearer()).status_code == 429
    assert c.get("/api/status", headers=bearer()).status_code == 429
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "dashboard"]
    wrong = [m for m in lines if "wrong bearer token" in m]
    assert len(wrong) == 5 and all("127.0.0.1" in m and "/api/stop" in m for m in wrong)
    assert not any(g in m for g in guesses for m in lines)
    assert recorder.payloads("room1/steam") == []  # no stop ever ran
    # another client is not blocked by this one's guesses
    other = TestClient(app, base_url=BASE, client=("127.0.0.2", 50001))
    assert other.post("/api/stop", headers=bearer()).status_code == 200


def test_log_limiter_sums_up_what_it_left_out(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    limiter = RateLimitedLog(logging.getLogger("dashboard"), burst=3, period=10.0,
                             clock=lambda: now[0], summary="line")
    caplog.set_level(logging.WARNING, logger="dashboard")
    written = [limiter.warning("k", "line %d", i) for i in range(50)]
    assert written == [True] * 3 + [False] * 47
    now[0] = 10.0
    assert limiter.warning("k", "later")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["line 0", "line 1", "line 2",
                        "(47 similar lines left out in the last 10 s)", "later"]


def test_get_never_changes_state(room: LabRoom, app: Starlette, recorder: Recorder) -> None:
    c = local(app, headers=bearer())
    before = c.get("/api/snapshot").json()
    for path in ["/", *READ_PATHS, "/api/session"]:
        assert c.get(path).status_code == 200, path
    for path in ("/api/play", "/api/stop", "/api/panic", "/api/login", "/api/logout"):
        r = c.get(path, params={"scene": "intro"})
        assert r.status_code == 405, path
        assert "POST" in r.json()["error"]
    after = c.get("/api/snapshot").json()
    assert room.player.state() is None
    assert before["history"] == after["history"] and before["scene"] == after["scene"]
    assert recorder.payloads("room1/light") == [] and recorder.payloads("room1/steam") == []


def test_the_token_never_appears_in_pages_or_logs(app: Starlette, room: LabRoom,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    c = local(app)
    c.post("/api/login", json={"token": TOKEN + "x"})
    c.post("/api/login", json={"token": TOKEN})
    c.post("/api/panic", headers=bearer())
    texts = [c.get(p).text for p in ["/", "/static/app.js", *READ_PATHS, "/api/session"]]
    assert all(TOKEN not in t for t in texts)
    assert all(TOKEN not in r.getMessage() for r in caplog.records)
    assert any("PANIC" in r.getMessage() for r in caplog.records if r.name == "dashboard")


def test_page_and_api_carry_security_headers(app: Starlette) -> None:
    c = local(app)
    for path in ("/", "/api/status", "/static/app.css"):
        h = c.get(path).headers
        assert "frame-ancestors 'none'" in h["content-security-policy"]
        assert "script-src" not in h["content-security-policy"]  # default-src 'self': no inline
        assert h["x-frame-options"] == "DENY" and h["x-content-type-options"] == "nosniff"
    assert c.get("/api/status").headers["cache-control"] == "no-store"
    r = c.get("/api/nothing")
    assert r.status_code == 404 and "README" in r.json()["error"]


# -- the live feed, through the real server --------------------------------------------

def read_events(response: httpx2.Response, events: list[dict[str, Any]],
                comments: list[str]) -> None:
    """Collects `snapshot` events from an open SSE response until it ends."""
    data: list[str] = []
    event = "message"
    try:
        for line in response.iter_lines():
            if line.startswith(":"):
                comments.append(line)
            elif line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif line == "" and data:
                if event == "snapshot":
                    events.append(json.loads("\n".join(data)))
                data, event = [], "message"
    except httpx2.HTTPError:
        pass  # the server went away: the test is over


@pytest.fixture
def served(room: LabRoom) -> Iterator[DashboardServer]:
    server = DashboardServer(create_app(room, feed_min_interval=0.25), "127.0.0.1", 0)
    server.start()
    yield server
    server.stop()


def test_live_feed_pushes_changes_coalesced(room: LabRoom, served: DashboardServer) -> None:
    events: list[dict[str, Any]] = []
    comments: list[str] = []
    with httpx2.Client(base_url=served.url, timeout=10) as http, \
            http.stream("GET", "/api/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        reader = threading.Thread(target=read_events, args=(response, events, comments),
                                  daemon=True)
        reader.start()
        wait_until(lambda: events, 5, what="the first snapshot")
        assert events[0]["devices"]["devices"] == []

        room.registry.update_device_status("esp32_07", "online")
        wait_until(lambda: any(e["devices"]["devices"] for e in events), 5,
                   what="a snapshot with the new device")
        assert events[-1]["devices"]["devices"][0]["id"] == "esp32_07"

        # A storm of 300 changes over ~0.6 s gives a handful of snapshots, not 300.
        count_before = len(events)
        started = time.monotonic()
        for i in range(300):
            room.registry.update_device_status("esp32_08", "online" if i % 2 else "offline")
            time.sleep(0.002)
        storm = time.monotonic() - started
        wait_until(lambda: events[-1]["devices"]["devices"][-1]["online"] is True, 5,
                   what="the last state of the storm")
        pushed = len(events) - count_before
        assert 1 <= pushed <= storm / 0.25 + 3, f"{pushed} snapshots in {storm:.2f}s"

        # Stopping the server ends the open stream instead of waiting on it.
        stop_started = time.monotonic()
        served.stop()
        stop_took = time.monotonic() - stop_started
        reader.join(5)
        assert not reader.is_alive()
    assert stop_took < 4, f"stop() waited {stop_took:.1f}s on an open stream"


def test_port_in_use_is_a_sentence(room: LabRoom, served: DashboardServer) -> None:
    with pytest.raises(RunnerError) as err:
        DashboardServer(create_app(room), "127.0.0.1", served.port).start()
    assert f"127.0.0.1:{served.port}" in str(err.value)
    assert "dashboard: {port:" in str(err.value)


def test_server_serves_the_page(served: DashboardServer) -> None:
    assert served.port != 0
    r = httpx2.get(served.url, timeout=5)
    assert r.status_code == 200 and "/static/app.js" in r.text
    assert "server" not in r.headers  # no version banner
    assert httpx2.get(served.url + "static/app.js", timeout=5).status_code == 200



def test_devices_are_paged(room: LabRoom, app: Starlette) -> None:
    for i in range(30):
        room.registry.update_device_status(f"dev{i:02d}", "online")
    c = local(app)
    page = c.get("/api/devices?offset=10&limit=5").json()
    assert page["total"] == 30 and page["offset"] == 10 and page["limit"] == 5
    assert [d["id"] for d in page["devices"]] == [f"dev{i}" for i in range(10, 15)]
    assert len(c.get("/api/devices").json()["devices"]) == 30  # the default page holds all
    assert c.get("/api/devices?limit=999999").json()["limit"] == 1000
    bad = c.get("/api/devices?offset=-1")
    assert bad.status_code == 400 and "offset=0&limit=100" in bad.json()["error"]
