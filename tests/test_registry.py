"""Device registry through a real mosquitto: presence, last wills, retained refill, threads."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading

import pytest

from runner.mqtt.registry import DeviceInfo, DeviceRegistry
from runner.records import Delivery
from tests.brokers import Mosquitto
from tests.conftest import wait_until
from tests.mqtt_support import Device, stack_on

# A device process that dies without DISCONNECT, so only its last will tells the broker.
DEVICE_SCRIPT = """
import sys, time, paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
host, port, dev = sys.argv[1], int(sys.argv[2]), sys.argv[3]
c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=dev)
c.will_set(f"devices/{dev}/status", "offline", qos=1, retain=True)
c.connect(host, port, keepalive=60)
c.loop_start()
c.publish(f"devices/{dev}/status", "online", qos=1, retain=True).wait_for_publish(5)
print("ready", flush=True)
time.sleep(60)
"""


def test_device_online_then_clean_offline(mosquitto: Mosquitto,
                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mqtt_devices")
    with stack_on(mosquitto) as stack:
        seen: list[DeviceInfo] = []
        stack.registry.add_listener(seen.append)
        device = Device(mosquitto, "esp32_01")
        device.online()
        wait_until(lambda: stack.registry.get_connected_devices() == ["esp32_01"],
                   what="esp32_01 online")
        device.send(device.status_topic, "offline", retain=True)
        wait_until(lambda: stack.registry.get_connected_devices() == [], what="esp32_01 offline")
        device.close()
        info = stack.registry.get_all_devices()["esp32_01"]
        assert not info.online and info.last_seen >= info.since > 0
        assert [(d.id, d.online) for d in seen] == [("esp32_01", True), ("esp32_01", False)]
        assert any("esp32_01 connected" in m for m in caplog.messages)
        assert any("esp32_01 disconnected" in m for m in caplog.messages)


def test_device_killed_without_disconnect_goes_offline_by_its_last_will(
        mosquitto: Mosquitto) -> None:
    with stack_on(mosquitto) as stack:
        proc = subprocess.Popen(
            [sys.executable, "-c", DEVICE_SCRIPT, mosquitto.host, str(mosquitto.port),
             "esp32_killed"], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            wait_until(lambda: "esp32_killed" in stack.registry.get_connected_devices(),
                       what="the device online")
            proc.kill()  # SIGKILL: no DISCONNECT packet, the broker sends the will
            proc.wait(5)
            wait_until(lambda: not stack.registry.get_all_devices()["esp32_killed"].online,
                       timeout=10, what="the last will to mark the device offline")
        finally:
            proc.kill()
            proc.wait(5)
            if proc.stdout:
                proc.stdout.close()


def test_retained_presence_fills_the_registry_at_subscribe(mosquitto: Mosquitto) -> None:
    device = Device(mosquitto, "esp32_early")
    device.online()
    device.close()
    with stack_on(mosquitto) as stack:
        wait_until(lambda: stack.registry.get_connected_devices() == ["esp32_early"],
                   what="retained presence")


def test_only_changes_are_logged_and_announced(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="mqtt_devices")
    clock = iter([10.0, 11.0, 12.0, 13.0])
    registry = DeviceRegistry(clock=lambda: next(clock))
    heard: list[DeviceInfo] = []
    registry.add_listener(heard.append)
    registry.update_device_status("esp32_01", "online")
    registry.update_device_status("esp32_01", "ONLINE")
    registry.update_device_status("esp32_01", "online")
    assert registry.get_all_devices()["esp32_01"] == DeviceInfo("esp32_01", True, 12.0, 10.0)
    assert len(heard) == 1
    assert len([m for m in caplog.messages if "esp32_01" in m]) == 1
    registry.update_device_status("esp32_01", "rebooting")  # not presence: ignored
    assert registry.get_all_devices()["esp32_01"].online
    registry.clear_devices()
    assert registry.get_all_devices() == {}


def test_eight_publishing_threads_while_the_dashboard_reads(mosquitto: Mosquitto) -> None:
    per_thread = 25  # 200 devices: the registry keeps that many others, none forgotten
    with stack_on(mosquitto) as stack:
        errors: list[BaseException] = []
        done = threading.Event()
        reads = 0

        def reader() -> None:
            nonlocal reads
            last = 0
            try:
                while not done.is_set():
                    online = stack.registry.get_connected_devices()
                    everything = stack.registry.get_all_devices()  # read after: a superset
                    assert set(online) <= set(everything)
                    assert len(everything) >= last  # devices never vanish
                    last = len(everything)
                    reads += 1
            except BaseException as err:  # reported to the test thread
                errors.append(err)

        def publisher(t: int) -> None:
            try:
                for i in range(per_thread):
                    delivery = stack.client.publish(f"devices/t{t}_{i}/status", "online")
                    assert delivery is Delivery.SENT
            except BaseException as err:
                errors.append(err)

        read_thread = threading.Thread(target=reader)
        read_thread.start()
        pubs = [threading.Thread(target=publisher, args=(t,)) for t in range(8)]
        for p in pubs:
            p.start()
        for p in pubs:
            p.join(30)
        try:
            wait_until(lambda: len(stack.registry.get_connected_devices()) == 8 * per_thread,
                       timeout=20, what="every device in the registry")
        finally:
            done.set()
            read_thread.join(10)
        assert errors == []
        assert reads > 0
        sent = stack.client.health().messages_out
    assert isinstance(sent, int) and sent >= 8 * per_thread
