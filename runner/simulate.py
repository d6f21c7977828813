"""Virtual ESP32s: paho clients that answer commands like the room's real devices.

Each `VirtualDevice` is one paho client with a last will, as a real ESP32 would be.
A `DeviceFleet` drives all of them from one thread: paho's external-loop hooks put
every socket on one asyncio loop, whose `call_later` also holds the answer delays
(a timer heap, not a thread per message), so hundreds of devices stay cheap.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from runner.model import TLSConfig
from runner.mqtt.tls import tls_context
from runner.topics import Topic

log = logging.getLogger("simulate")

DEFAULT_LATENCY = (0.05, 0.05)
RECONNECT_MIN = 0.5  # seconds before the first reconnect attempt
RECONNECT_MAX = 5.0  # the backoff stops growing here
MISC_INTERVAL = 1.0  # how often paho's keepalive bookkeeping runs
CONNECT_TIMEOUT = 2.0  # a TCP connect blocks the shared loop, so keep it short
STOP_TIMEOUT = 5.0


@dataclass(frozen=True)
class Flakiness:
    """How a flaky device behaves: seconds online before it drops off, seconds away."""

    up: tuple[float, float] = (15.0, 45.0)
    down: tuple[float, float] = (2.0, 8.0)


@dataclass(frozen=True)
class Answer:
    """One command a virtual device answered."""

    device: str
    topic: str
    message: str
    status: str  # "OK" or "ERROR"
    feedback_topic: str
    latency: float  # seconds from the command's arrival to the answer's publish


def parse_latency(text: str) -> tuple[float, float]:
    """`"0.05"` or `"0.1-0.5"` (seconds) as (min, max); ValueError with a sentence."""
    parts = text.split("-")
    try:
        if len(parts) == 1:
            low = high = float(parts[0])
        elif len(parts) == 2:
            low, high = float(parts[0]), float(parts[1])
        else:
            raise ValueError(text)
    except ValueError:
        raise ValueError(
            f"latency {text!r} is not a number of seconds: write e.g. 0.05 or 0.1-0.5"
        ) from None
    if low < 0 or high < low:
        raise ValueError(
            f"latency {text!r} must be MIN-MAX with 0 <= MIN <= MAX seconds, e.g. 0.1-0.5"
        )
    return low, high


def parse_device(text: str) -> tuple[str, tuple[str, ...]]:
    """`"esp32_01:room1/light,room1/motor"` as (id, topics); ValueError with a sentence."""
    device_id, sep, rest = text.partition(":")
    topics = tuple(t.strip() for t in rest.split(",") if t.strip())
    if not sep or not device_id.strip() or not topics:
        raise ValueError(
            f"--device {text!r} must be ID:TOPIC[,TOPIC...], e.g. esp32_01:room1/light,room1/motor"
        )
    if "/" in device_id or "+" in device_id or "#" in device_id:
        raise ValueError(f"device id {device_id!r} may not contain '/', '+' or '#'")
    return device_id.strip(), topics


def devices_for_topics(topics: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """One virtual device per command topic, named after it: room1/light -> esp32_room1_light."""
    return {f"esp32_{t.replace('/', '_')}": (t,) for t in dict.fromkeys(topics)}


def _answers(topic: str) -> bool:
    # Feedback and presence arrive on */status, and the runner's own topics are not
    # commands: answering them would echo forever under a wildcard subscription.
    named = Topic(topic)
    return not named.ends_in("status") and not named.starts_in("runner")


class VirtualDevice:
    """One virtual ESP32: presence with a last will, and an OK/ERROR for every command.

    Driven by a `DeviceFleet`: every method except the constructor and the read-only
    properties runs on the fleet's loop thread.
    """

    def __init__(
        self,
        device_id: str,
        topics: Sequence[str],
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        room_status_topic: str | None = None,
        latency: tuple[float, float] = DEFAULT_LATENCY,
        error_rate: float = 0.0,
        flaky: Flakiness | None = None,
        username: str | None = None,
        password: str | None = None,
        tls: TLSConfig | None = None,
        keepalive: int = 30,
        json_feedback: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError(f"error rate {error_rate} must be between 0 and 1, e.g. 0.1")
        self.id = device_id
        self.topics = tuple(topics)
        self.host = host
        self.port = port
        self.room_status_topic = room_status_topic  # None: <first segment>/status
        self.latency = latency
        self.error_rate = error_rate
        self.flaky = flaky
        self.json_feedback = json_feedback
        self.keepalive = keepalive
        self._rng = rng or random.Random()  # noqa: S311 (timing noise, not secrets)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_change: Callable[[VirtualDevice], None] = lambda _d: None
        self._on_answer: Callable[[Answer], None] = lambda _a: None
        self._online = False  # connected, subscribed, and `online` acknowledged
        self._connected = False
        self._online_mid = -1
        self._stopping = False
        self._backoff = RECONNECT_MIN
        self._away_until = 0.0
        self._misc: asyncio.TimerHandle | None = None
        self._pending: set[asyncio.TimerHandle] = set()
        self._next_drop: asyncio.TimerHandle | None = None
        self.answered = 0
        self.drops = 0

        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"sim_{device_id}",
            reconnect_on_failure=False,
        )
        self.client.connect_timeout = CONNECT_TIMEOUT
        if username:
            self.client.username_pw_set(username, password)
        if tls:
            self.client.tls_set_context(tls_context(tls))
        self.client.will_set(self.status_topic, "offline", qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_socket_open = self._on_socket_open
        self.client.on_socket_close = self._on_socket_close
        self.client.on_socket_register_write = self._on_register_write
        self.client.on_socket_unregister_write = self._on_unregister_write
        self.client.connect_async(host, port, keepalive)

    @property
    def status_topic(self) -> str:
        return f"devices/{self.id}/status"

    @property
    def online(self) -> bool:
        return self._online

    def feedback_topic(self, command_topic: str) -> str:
        """Where the answer to a command goes: the room's status topic."""
        if self.room_status_topic:
            return self.room_status_topic
        return Topic(command_topic).room_status

    # --- driven by the fleet, on its loop thread ---------------------------------

    def attach(
        self,
        loop: asyncio.AbstractEventLoop,
        on_change: Callable[[VirtualDevice], None],
        on_answer: Callable[[Answer], None],
    ) -> None:
        self._loop = loop
        self._on_change = on_change
        self._on_answer = on_answer

    def connect(self) -> None:
        """Try the broker once; on failure try again later with a growing pause."""
        if self._stopping:
            return
        try:
            self.client.reconnect()
        except (OSError, ValueError) as exc:
            log.debug("%s: cannot reach %s:%s (%s)", self.id, self.host, self.port, exc)
            self._retry_later()

    def go_offline(self) -> bool:
        """Announce `offline` and disconnect cleanly; False when there is nothing to do."""
        self._stopping = True
        for handle in self._pending:
            handle.cancel()
        self._pending.clear()
        if self.client.socket() is None:
            return False
        if self._connected:
            self.client.publish(self.status_topic, "offline", qos=1, retain=True)
        self.client.disconnect()
        return True

    def drop(self, away: float) -> None:
        """Fall off the network without DISCONNECT, so the broker sends the last will."""
        sock = self.client.socket()
        if sock is None or self._loop is None:
            return
        self._away_until = self._loop.time() + away
        self.drops += 1
        log.info("%s: drops off the network for %.1fs (flaky)", self.id, away)
        with contextlib.suppress(OSError):
            # The reader then sees EOF and paho cleans up as after a real outage.
            cast(socket.socket, sock).shutdown(socket.SHUT_RDWR)

    def _retry_later(self) -> None:
        assert self._loop is not None
        delay = max(self._backoff, self._away_until - self._loop.time())
        self._backoff = min(self._backoff * 2, RECONNECT_MAX)
        self._loop.call_later(delay, self.connect)

    # --- paho's external-loop hooks ----------------------------------------------

    def _on_socket_open(self, client: mqtt.Client, _u: Any, sock: Any) -> None:
        assert self._loop is not None
        with contextlib.suppress(OSError, AttributeError):
            # An answer right after a PUBACK must not wait for Nagle and a delayed ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._loop.add_reader(sock, client.loop_read)
        self._misc = self._loop.call_later(MISC_INTERVAL, self._tick)

    def _on_socket_close(self, _c: mqtt.Client, _u: Any, sock: Any) -> None:
        assert self._loop is not None
        self._loop.remove_reader(sock)
        self._loop.remove_writer(sock)
        if self._misc:
            self._misc.cancel()
            self._misc = None

    def _on_register_write(self, client: mqtt.Client, _u: Any, sock: Any) -> None:
        assert self._loop is not None
        self._loop.add_writer(sock, client.loop_write)

    def _on_unregister_write(self, _c: mqtt.Client, _u: Any, sock: Any) -> None:
        assert self._loop is not None
        self._loop.remove_writer(sock)

    def _tick(self) -> None:
        assert self._loop is not None
        if self.client.loop_misc() == mqtt.MQTT_ERR_SUCCESS:
            self._misc = self._loop.call_later(MISC_INTERVAL, self._tick)

    # --- MQTT callbacks ------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.warning("%s: the broker refused the connection: %s", self.id, reason)
            return
        assert self._loop is not None
        self._backoff = RECONNECT_MIN
        self._connected = True
        client.subscribe([(t, 1) for t in self.topics])
        # The broker handles one connection's packets in order: once `online` is
        # acknowledged, the subscriptions before it are in place.
        self._online_mid = client.publish(self.status_topic, "online", qos=1, retain=True).mid
        if self.flaky:
            up = self._rng.uniform(*self.flaky.up)
            away = self._rng.uniform(*self.flaky.down)
            self._next_drop = self._later(up, lambda: self.drop(away))

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, _r: Any, _p: Any) -> None:
        if mid == self._online_mid and self._connected:
            self._online = True
            self._on_change(self)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self._connected = False
        if self._next_drop:  # planned for this connection; the next one plans its own
            self._next_drop.cancel()
            self._pending.discard(self._next_drop)
            self._next_drop = None
        was_online, self._online = self._online, False
        if was_online:
            self._on_change(self)
        if self._stopping:
            return
        if was_online and not self._away_until:
            log.warning("%s: lost the broker (%s); reconnecting", self.id, reason)
        self._retry_later()
        self._away_until = 0.0  # spent: later retries follow the backoff alone

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if not _answers(msg.topic):
            return
        message = msg.payload.decode("utf-8", "replace")
        status = "ERROR" if self._rng.random() < self.error_rate else "OK"
        delay = self._rng.uniform(*self.latency)
        arrived = time.monotonic()
        self._later(delay, lambda: self._answer(msg.topic, message, status, arrived))

    def _later(self, delay: float, fn: Callable[[], None]) -> asyncio.TimerHandle:
        assert self._loop is not None
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._pending.discard(handle)
            fn()

        handle = self._loop.call_later(delay, fire)
        self._pending.add(handle)
        return handle

    def _answer(self, topic: str, message: str, status: str, arrived: float) -> None:
        if not self._connected:
            return  # a device that lost its network does not answer
        feedback_topic = self.feedback_topic(topic)
        payload = json.dumps({"status": status, "topic": topic}) if self.json_feedback else status
        self.client.publish(feedback_topic, payload, qos=1)
        self.answered += 1
        self._on_answer(
            Answer(self.id, topic, message, status, feedback_topic, time.monotonic() - arrived)
        )


class DeviceFleet:
    """Runs virtual devices on one shared network thread; `start()` / `stop()`."""

    def __init__(
        self,
        devices: Iterable[VirtualDevice],
        *,
        on_answer: Callable[[Answer], None] | None = None,
        on_change: Callable[[VirtualDevice], None] | None = None,
    ) -> None:
        self.devices = list(devices)
        self._on_answer = on_answer or (lambda _a: None)
        self._on_change = on_change or (lambda _d: None)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="device-fleet", daemon=True)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._closed = 0

    @classmethod
    def from_map(
        cls,
        devices: Mapping[str, Sequence[str]],
        host: str,
        port: int,
        *,
        on_answer: Callable[[Answer], None] | None = None,
        on_change: Callable[[VirtualDevice], None] | None = None,
        **device_options: Any,
    ) -> DeviceFleet:
        """One device per entry of an `id -> topics` map, all with the same options."""
        return cls(
            (VirtualDevice(i, t, host, port, **device_options) for i, t in devices.items()),
            on_answer=on_answer,
            on_change=on_change,
        )

    def start(self) -> None:
        """Connect every device in the background; `wait_online` tells when they are up."""
        for device in self.devices:
            device.attach(self._loop, self._changed_device, self._on_answer)
        self._thread.start()
        for device in self.devices:
            self._loop.call_soon_threadsafe(device.connect)

    def online(self) -> list[str]:
        return [d.id for d in self.devices if d.online]

    def wait_online(self, timeout: float) -> bool:
        """Until every device is online, or `timeout` seconds have passed."""
        with self._changed:
            return self._changed.wait_for(
                lambda: all(d.online for d in self.devices), timeout=timeout
            )

    def drop(self, device_id: str, away: float) -> None:
        """Make one device fall off the network for `away` seconds (its will fires)."""
        for device in self.devices:
            if device.id == device_id:
                self._loop.call_soon_threadsafe(device.drop, away)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Every device announces `offline` and disconnects; then the thread ends."""
        if not self._thread.is_alive():
            if self._thread.ident is None and not self._loop.is_closed():
                self._loop.close()  # never started
            return
        future = asyncio.run_coroutine_threadsafe(self._go_offline(timeout), self._loop)
        try:
            future.result(timeout + 1.0)
        except concurrent.futures.TimeoutError:
            log.warning("some virtual devices did not say offline in %.1fs", timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)

    async def _go_offline(self, timeout: float) -> None:
        waiting = [d for d in self.devices if d.go_offline()]
        deadline = time.monotonic() + timeout
        while any(d.client.socket() is not None for d in waiting):
            if time.monotonic() > deadline:
                log.warning("virtual devices still connected after %.1fs", timeout)
                return
            await asyncio.sleep(0.02)

    def _changed_device(self, device: VirtualDevice) -> None:
        with self._changed:
            self._changed.notify_all()
        log.info("%s: %s", device.id, "online" if device.online else "offline")
        self._on_change(device)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            for device in self.devices:
                sock = device.client.socket()
                if sock is not None:
                    sock.close()
            self._loop.close()
