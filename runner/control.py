"""Remote control on `runner/<room>/cmd` and the retained room state on `runner/<room>/state`.

A command names a scene by id and nothing else: no file names, no paths, nothing to
run, so the worst a stranger on the broker can do is what the dashboard's buttons do.
"""

from __future__ import annotations

import difflib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from runner.errors import UnknownSceneError
from runner.model import Scene
from runner.records import Delivery, SceneRun

log = logging.getLogger("control")

COMMANDS = ("play", "stop", "panic")
STATE_INTERVAL = 1.0  # while a scene plays, `elapsed` is republished this often, no more
STATE_MIN_GAP = 0.05  # a burst of changes (cues at one offset) becomes one state message
CMD_TRIGGER = "cmd"  # what the run history names as the starter of a remote `play`


class Controllable(Protocol):
    """What remote control needs of the room service."""

    @property
    def scenes(self) -> Mapping[str, Scene]: ...
    def play(self, scene_id: str, trigger: str) -> SceneRun | None: ...
    def stop(self) -> None: ...
    def panic(self) -> None: ...


Submit = Callable[[Callable[[], object]], None]


def parse_command(text: str) -> tuple[str, str | None] | str:
    """(command, scene) from a cmd payload, or a sentence saying what is wrong with it.

    Accepted: JSON `{"command": "play", "scene": "intro"}`, `{"command": "stop"}`,
    `{"command": "panic"}`, and the bare words `stop` and `panic`.
    """
    word = text.strip()
    if word.lower() in ("stop", "panic"):
        return word.lower(), None
    try:
        doc = json.loads(word)
    except ValueError:
        return ('not JSON: send {"command": "play", "scene": "<id>"}, '
                '{"command": "stop"} or {"command": "panic"}')
    if not isinstance(doc, dict) or not isinstance(doc.get("command"), str):
        return 'expected a JSON object with a "command": play, stop or panic'
    command = doc["command"].strip().lower()
    if command not in COMMANDS:
        close = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown command {doc['command']!r}{hint}; known: play, stop, panic"
    if command != "play":
        return command, None
    scene = doc.get("scene")
    if not isinstance(scene, str) or not scene.strip():
        return 'play needs "scene": the id of a scene, e.g. {"command": "play", "scene": "intro"}'
    return command, scene.strip()


class RemoteControl:
    """Turns cmd messages into play / stop / panic on the room; bad ones are logged, dropped.

    `submit` hands the work to the room's worker thread: the MQTT thread never waits.
    """

    def __init__(self, room: Controllable, submit: Submit) -> None:
        self._room = room
        self._submit = submit

    def handle(self, topic: str, text: str) -> None:
        parsed = parse_command(text)
        if isinstance(parsed, str):
            log.warning("Remote command on %s ignored: %s", topic, parsed)
            return
        command, scene_id = parsed
        if command == "play":
            assert scene_id is not None
            scenes = self._room.scenes
            if scene_id not in scenes:
                close = difflib.get_close_matches(scene_id, list(scenes), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                log.warning("Remote command on %s ignored: no scene %r%s; known: %s", topic,
                            scene_id[:80], hint, ", ".join(sorted(scenes)) or "none")
                return
            log.info("Remote command: play %s", scene_id)
            self._submit(lambda: self._play(scene_id))
        elif command == "stop":
            log.info("Remote command: stop")
            self._submit(self._room.stop)
        else:
            log.warning("Remote command: PANIC")
            self._submit(self._room.panic)

    def _play(self, scene_id: str) -> None:
        try:
            self._room.play(scene_id, CMD_TRIGGER)
        except UnknownSceneError:  # removed by a reload between the check and now
            log.warning("Remote command: scene %r is gone (config reloaded)", scene_id)


class StateClient(Protocol):
    @property
    def connected(self) -> bool: ...
    def publish(self, topic: str, payload: str, qos: int = 1,
                retain: bool = False) -> Delivery: ...


class StatePublisher:
    """Keeps the retained room state on the broker current.

    `notify()` after any change publishes at once (bursts coalesced to one message per
    `min_gap`); while a scene plays, the state is republished every `interval` so that
    `elapsed` moves, and no more often than that. Nothing is published while the broker
    is away; `on_connect()` republishes, since a restarted broker may have lost it.
    """

    def __init__(self, client: StateClient, topic: str, build: Callable[[], dict[str, Any]],
                 running: Callable[[], bool], *, interval: float = STATE_INTERVAL,
                 min_gap: float = STATE_MIN_GAP) -> None:
        self._client = client
        self._topic = topic
        self._build = build
        self._running = running
        self._interval = interval
        self._min_gap = min_gap
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._last_payload: str | None = None
        self._last_at = 0.0
        self._thread: threading.Thread | None = None

    @property
    def topic(self) -> str:
        return self._topic

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="state", daemon=True)
        self._thread.start()
        self._wake.set()

    def notify(self) -> None:
        """Something changed; returns at once (any thread)."""
        self._wake.set()

    def on_connect(self) -> None:
        self._last_payload = None
        self._wake.set()

    def _loop(self) -> None:
        while not self._closing.is_set():
            self._wake.wait(self._interval if self._running() else None)
            if self._closing.is_set():
                return
            gap = time.monotonic() - self._last_at
            if gap < self._min_gap:
                self._closing.wait(self._min_gap - gap)
            self._wake.clear()
            try:
                self.publish_now()
            except Exception:  # the state is a courtesy; the show goes on without it
                log.exception("room state could not be built or published")

    def publish_now(self, state: dict[str, Any] | None = None) -> bool:
        """Publish the state (built now unless given) when it changed; True when sent."""
        if not self._client.connected:
            return False
        payload = json.dumps(state if state is not None else self._build(),
                             ensure_ascii=False, separators=(",", ":"), default=str)
        if payload == self._last_payload:
            return False
        delivery = self._client.publish(self._topic, payload, qos=1, retain=True)
        self._last_at = time.monotonic()
        if delivery is Delivery.SENT:
            self._last_payload = payload
            return True
        return False

    def stop(self, final: dict[str, Any] | None = None) -> None:
        """End the loop; publish `final` (the idle state) as the last retained word."""
        self._closing.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2.0)
        if final is not None:
            try:
                self.publish_now(final)
            except Exception:
                log.exception("final room state could not be published")
