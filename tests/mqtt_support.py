"""Helpers for the MQTT tests: the runner's MQTT stack on a test broker, and a device client."""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from runner.model import BrokerConfig, Config
from runner.mqtt.client import MQTTClient
from runner.mqtt.feedback import FeedbackTracker
from runner.mqtt.handler import MessageHandler
from runner.mqtt.registry import DeviceRegistry
from runner.mqtt.stack import ClientSetup, MqttStack, build_mqtt_stack
from tests.brokers import Mosquitto
from tests.conftest import wait_until

PRESENCE = "runner/room1/status"
_ids = itertools.count(1)


@dataclass
class Stack:
    """The room's MQTT stack (runner.mqtt.stack, as the service builds it), for tests."""

    mqtt: MqttStack

    @property
    def client(self) -> MQTTClient:
        return self.mqtt.client

    @property
    def registry(self) -> DeviceRegistry:
        return self.mqtt.registry

    @property
    def tracker(self) -> FeedbackTracker:
        return self.mqtt.tracker

    @property
    def handler(self) -> MessageHandler:
        return self.mqtt.handler

    def wait_subscribed(self, timeout: float = 5.0) -> None:
        """Our own publish after SUBSCRIBE comes back only once the subscription is live."""
        before = self.messages_in()
        probe = f"probe{next(_ids)}/status"

        def live() -> bool:
            self.client.publish(probe, "probe", qos=0)
            return self.messages_in() > before

        wait_until(live, timeout, interval=0.05, what="our subscriptions to be live")

    def messages_in(self) -> int:
        return self.client.health().messages_in

    def close(self) -> None:
        self.mqtt.close()


def make_stack(host: str, port: int, *, timeout: float = 1.0,
               devices: Mapping[str, tuple[str, ...]] | None = None,
               connect_retries: int = 1, retry_delay: float = 0.05,
               max_backoff: float = 0.3, **client_kw: Any) -> Stack:
    """Room room1's stack on the broker at host:port; `client_kw`: other ClientSetup fields."""
    config = Config(room="room1", broker=BrokerConfig(host=host, port=port),
                    feedback_timeout=timeout, devices=dict(devices or {}))
    setup = dataclasses.replace(
        ClientSetup.from_config(config), client_id=f"runner-test-{next(_ids)}",
        connect_retries=connect_retries, retry_delay=retry_delay, max_backoff=max_backoff,
        presence_topic=PRESENCE, **client_kw)
    return Stack(build_mqtt_stack(config, {}, client=setup))


@contextmanager
def stack_on(broker: Mosquitto, **kw: object) -> Iterator[Stack]:
    """A connected stack whose subscriptions are live."""
    stack = make_stack(broker.host, broker.port, **kw)  # type: ignore[arg-type]
    try:
        assert stack.client.connect(), f"could not connect to {broker.address}"
        stack.wait_subscribed()
        yield stack
    finally:
        stack.close()


class Device:
    """A plain paho client playing an ESP32: presence with a last will, and answers."""

    def __init__(self, broker: Mosquitto, device_id: str = "esp32_01") -> None:
        self.id = device_id
        self.status_topic = f"devices/{device_id}/status"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"dev-{device_id}")
        self.client.will_set(self.status_topic, "offline", qos=1, retain=True)
        connected = threading.Event()
        self.client.on_connect = lambda *a: connected.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert connected.wait(5), "device could not connect"

    def send(self, topic: str, payload: str | bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def answer(self, command_topic: str, reply: str, delay: float = 0.0,
               reply_topic: str | None = None) -> None:
        """Reply `reply` to every command on `command_topic`, `delay` seconds later."""
        target = reply_topic or command_topic.split("/", 1)[0] + "/status"

        def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
            if msg.topic == command_topic:
                # Never wait inside paho's thread: the reply goes from a timer thread.
                threading.Timer(delay, self.client.publish, (target, reply, 1)).start()

        subscribed = threading.Event()
        self.client.on_message = on_message
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.subscribe(command_topic, qos=1)
        assert subscribed.wait(5), "device could not subscribe"

    def online(self) -> None:
        self.send(self.status_topic, "online", retain=True)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
