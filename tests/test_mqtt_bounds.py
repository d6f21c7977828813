"""Bounds against a shared broker: thousands of foreign devices, a small packet limit."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from runner.configfile import load_config
from runner.mqtt.client import DEFAULT_MAX_PACKET, packet_size
from runner.mqtt.registry import DeviceRegistry
from runner.ratelimitlog import RateLimitedLog
from runner.records import Delivery
from runner.service import RoomService
from tests.brokers import Mosquitto
from tests.conftest import wait_until
from tests.mqtt_support import stack_on

FAKE = 5000
STATE = "runner/room1/state"


def paho(broker: Mosquitto, name: str) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name)
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def flood(broker: Mosquitto, n: int = FAKE) -> None:
    """`n` retained `online` of foreign devices, and one of the room's own."""
    pub = paho(broker, "flood")
    infos = [pub.publish(f"devices/fake{i:05d}/status", "online", qos=1, retain=True)
             for i in range(n)]
    infos.append(pub.publish("devices/esp32_01/status", "online", qos=1, retain=True))
    for info in infos:
        info.wait_for_publish(30)
    pub.disconnect()
    pub.loop_stop()


class StateWatcher:
    """The retained room state as an independent subscriber sees it."""

    def __init__(self, broker: Mosquitto) -> None:
        self.payloads: list[bytes] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="state-watch")
        self.client.on_connect = lambda c, *a: c.subscribe(STATE, qos=1)
        self.client.on_message = self._on
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def _on(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.payloads.append(bytes(msg.payload))

    def last(self) -> dict[str, object] | None:
        with self.lock:
            return json.loads(self.payloads[-1]) if self.payloads else None

    def largest(self) -> int:
        with self.lock:
            return max(len(p) for p in self.payloads)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextmanager
def room_on(broker: Mosquitto, tmp_path: Path, extra: str = "") -> Iterator[RoomService]:
    config = tmp_path / "runner.yaml"
    config.write_text(
        "room: room1\n"
        f"broker: {{host: 127.0.0.1, port: {broker.port}, connect_retries: 2, "
        "retry_delay: 0.2}\n"
        "dashboard: {enabled: false}\n"
        "devices:\n  esp32_01: [room1/light]\n  esp32_09: [room1/fog]\n"
        f"{extra}")
    (tmp_path / "scenes").mkdir(exist_ok=True)
    room = RoomService(load_config(config), dummy_media=True,
                       history_path=tmp_path / "history.sqlite3")
    room.start()
    try:
        yield room
    finally:
        room.shutdown()


def counts_total(watcher: StateWatcher, total: int) -> Callable[[], bool]:
    def done() -> bool:
        state = watcher.last()
        return state is not None and state["device_counts"]["total"] == total  # type: ignore[index]
    return done


def test_5000_foreign_devices_keep_the_registry_and_the_state_small(
        broker_factory: Callable[..., Mosquitto], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mqtt_devices")
    # mosquitto's default queue (1000) would drop most of the retained burst.
    mosquitto = broker_factory(extra_conf="max_queued_messages 20000").start()
    flood(mosquitto)
    watcher = StateWatcher(mosquitto)
    try:
        with room_on(mosquitto, tmp_path, "registry: {devices_max_other: 150}\n") as room:
            wait_until(lambda: room.registry.forgotten == FAKE - 150, timeout=60,
                       what="the retained flood handled")
            wait_until(counts_total(watcher, 151), timeout=30, what="the state with counts")
            known = room.registry.get_all_devices()
            assert len(known) == 151
            assert known["esp32_01"].online  # the room's own device, kept
            # The most recently heard foreign devices are the ones kept.
            assert "fake04999" in known and "fake00000" not in known
            state = watcher.last()
            assert state is not None
            assert set(cast("dict[str, object]", state["devices"])) == {"esp32_01"}
            assert watcher.largest() <= 16 * 1024, watcher.largest()
            assert room.client.health().reconnects == 0
        full = [m for m in caplog.messages if "registry full" in m]
        assert 1 <= len(full) <= 3, full  # not one line per forgotten device
    finally:
        watcher.close()


def test_a_broker_with_a_small_packet_limit_keeps_the_runner_connected(
        broker_factory: Callable[..., Mosquitto], tmp_path: Path) -> None:
    broker = broker_factory(extra_conf="max_packet_size 4096\nmax_queued_messages 20000").start()
    flood(broker, 2000)
    watcher = StateWatcher(broker)
    try:
        with room_on(broker, tmp_path) as room:
            wait_until(counts_total(watcher, 201), timeout=60, what="the state after the flood")
            room.state.notify()
            assert room.client.connected
            assert room.client.health().reconnects == 0
            # Something larger than any broker limit is refused here, not sent.
            assert room.client.publish("room1/big", "x" * (DEFAULT_MAX_PACKET + 1)) \
                is Delivery.FAILED
            assert room.client.publish("room1/light", "ON") is Delivery.SENT
            assert room.client.connected
    finally:
        watcher.close()


def test_an_oversized_publish_is_refused_and_the_connection_stays(
        mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="mqtt")
    with stack_on(mosquitto) as stack:
        big = "x" * DEFAULT_MAX_PACKET
        for _ in range(5):
            assert stack.client.publish("room1/big", big) is Delivery.FAILED
        assert stack.client.publish("room1/light", "ON") is Delivery.SENT
        assert stack.client.connected and stack.client.health().reconnects == 0
    assert sum("more than the broker accepts" in m for m in caplog.messages) == 1


def test_packet_size_counts_header_topic_and_payload() -> None:
    assert packet_size("a/b", "ON", 1) == 2 + 2 + 3 + 2 + 2 + 1
    assert packet_size("t", "x" * 200, 0) == 3 + 2 + 1 + 200 + 1


def test_registry_keeps_own_devices_and_forgets_the_stalest_others() -> None:
    registry = DeviceRegistry(keep=["esp32_01"], max_other=3)
    registry.update_device_status("esp32_01", "online")
    for i in range(10):
        registry.update_device_status(f"x{i}", "online")
    registry.update_device_status("x7", "offline")  # heard again: now the freshest
    registry.update_device_status("x10", "online")
    assert set(registry.get_all_devices()) == {"esp32_01", "x9", "x7", "x10"}
    assert registry.forgotten == 8


def test_rate_limited_log_counts_what_it_held_back(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    limited = RateLimitedLog(logging.getLogger("t"), period=10, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="t")
    assert limited.warning("k", "dropped %s", "a")
    for _ in range(4):
        assert not limited.warning("k", "dropped %s", "b")
    assert limited.warning("other", "another kind")
    now[0] = 11.0
    assert limited.warning("k", "dropped %s", "c")
    assert caplog.messages == ["dropped a", "another kind",
                               "dropped c (and 4 more like it in the last 11 s)"]


def test_rate_limited_log_burst_counts_per_key(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    limited = RateLimitedLog(logging.getLogger("t"), period=10, clock=lambda: now[0], burst=2)
    caplog.set_level(logging.WARNING, logger="t")
    assert [limited.warning("k", "k %d", i) for i in range(5)] == [True, True, False, False,
                                                                    False]
    assert limited.warning("other", "other kind")  # its own budget
    now[0] = 9.0
    assert not limited.warning("k", "still held")  # the window began at the first line
    now[0] = 12.0
    assert limited.warning("k", "k again")
    assert caplog.messages == ["k 0", "k 1", "other kind",
                               "k again (and 4 more like it in the last 12 s)"]
