"""Fixtures shared by every test: a private mosquitto, the real `runner` command, bounded waits."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.brokers import Mosquitto, find_mosquitto

REPO = Path(__file__).resolve().parent.parent
SCENES = REPO / "scenes"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(component: str, present: bool, how: str) -> None:
    """A test that needs a real component fails (never skips) when it is missing."""
    if not present:
        pytest.fail(f"{component} is missing: {how}", pytrace=False)


def wait_until(predicate: Callable[[], object], timeout: float = 5.0,
               interval: float = 0.01, what: str = "condition") -> None:
    """Wait for `predicate()` to be truthy, failing the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A fresh mosquitto on a free loopback port; the test may stop, kill or restart it."""
    require("mosquitto", find_mosquitto() is not None, "apt-get install mosquitto")
    broker = Mosquitto(tmp_path / "broker").start()
    try:
        yield broker
    finally:
        broker.kill()


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    """Make brokers with custom listener settings (TLS, passwords); not started."""
    require("mosquitto", find_mosquitto() is not None, "apt-get install mosquitto")
    made: list[Mosquitto] = []

    def make(**kwargs: object) -> Mosquitto:
        b = Mosquitto(tmp_path / f"broker{len(made)}", **kwargs)  # type: ignore[arg-type]
        made.append(b)
        return b

    yield make
    for b in made:
        b.kill()


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    at: float  # time.monotonic() on arrival


@dataclass
class Recorder:
    """An independent paho subscriber that timestamps every message it receives."""

    client: mqtt.Client
    messages: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def payloads(self, topic: str) -> list[str]:
        with self.lock:
            return [m.payload.decode("utf-8", "replace") for m in self.messages if m.topic == topic]

    def on(self, topic: str) -> list[Received]:
        with self.lock:
            return [m for m in self.messages if m.topic == topic]

    def wait_for(self, topic: str, payload: str | None = None, timeout: float = 5.0,
                 count: int = 1) -> list[Received]:
        def found() -> list[Received]:
            with self.lock:
                return [m for m in self.messages if m.topic == topic
                        and (payload is None or m.payload == payload.encode())]
        wait_until(lambda: len(found()) >= count, timeout, what=f"{count}x {topic}={payload}")
        return found()

    def clear(self) -> None:
        with self.lock:
            self.messages.clear()


@pytest.fixture
def recorder(mosquitto: Mosquitto) -> Iterator[Recorder]:
    """Subscribed to '#' on the test broker before the test starts."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-recorder")
    rec = Recorder(client)
    subscribed = threading.Event()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with rec.lock:
            rec.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain),
                                         time.monotonic()))

    def on_connect(c: mqtt.Client, _u: object, _f: object, _rc: object, _p: object) -> None:
        c.subscribe("#", qos=1)

    client.on_message = on_message
    client.on_connect = on_connect
    client.on_subscribe = lambda *a: subscribed.set()
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    assert subscribed.wait(5), "recorder could not subscribe"
    yield rec
    # Disconnect first: loop_stop() alone waits out the loop's 1 s select.
    client.disconnect()
    client.loop_stop()


def run_runner(*args: str, cwd: Path | None = None, timeout: float = 60,
               env: dict[str, str] | None = None, input: str | None = None,
               ) -> subprocess.CompletedProcess[str]:
    """Run the real `runner` command (as installed: `python -m runner`)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        cwd=cwd or REPO, capture_output=True, text=True, timeout=timeout, env=full_env, check=False,
        input=input,
    )


def spawn_runner(*args: str, cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start `runner` in the background; the caller signals and waits for it."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "runner", *args],
        cwd=cwd or REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=full_env,
    )
