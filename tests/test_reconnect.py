"""Reconnecting after a broker restart: a short fixed retry period, taken from the config."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from runner.configfile import load_config
from runner.mqtt.stack import ClientSetup
from tests.brokers import Mosquitto
from tests.conftest import wait_until
from tests.mqtt_support import Device, make_stack

NEXT_TRY = re.compile(r"next try in ([0-9.]+)s")


def test_after_a_broker_restart_the_runner_resubscribes_retrying_at_the_set_period(
        mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="mqtt")
    stack = make_stack(mosquitto.host, mosquitto.port, max_backoff=5.0,
                       reconnect_delay=0.07)
    try:
        assert stack.client.connect()
        stack.wait_subscribed()
        mosquitto.kill()
        wait_until(lambda: not stack.client.connected, what="the lost connection")
        # Several refused attempts while the broker is away.
        wait_until(lambda: len(NEXT_TRY.findall(caplog.text)) >= 4, timeout=10,
                   what="retries while the broker is away")
        mosquitto.start()
        wait_until(lambda: stack.client.connected, timeout=10, what="the reconnect")
        device = Device(mosquitto)
        device.online()
        wait_until(lambda: stack.registry.get_connected_devices() == ["esp32_01"],
                   timeout=10, what="presence through the renewed subscription")
        device.close()
        delays = {float(d) for d in NEXT_TRY.findall(caplog.text)}
        # Fixed, not doubling towards max_backoff.
        assert delays == {0.07}, delays
    finally:
        stack.close()


def test_reconnect_delay_is_read_from_the_config(tmp_path: Path) -> None:
    path = tmp_path / "runner.yaml"
    path.write_text("room: room1\nbroker: {host: 127.0.0.1, port: 1, reconnect_delay: 0.3}\n")
    client = ClientSetup.from_config(load_config(path)).make()
    assert client._reconnect_delay == 0.3
    path.write_text("room: room1\n")
    assert ClientSetup.from_config(load_config(path)).make()._reconnect_delay == 0.1
