"""Helpers for the MQTT tests: the runner's MQTT stack on a test broker, and a device client."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import cast

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from runner.mqtt.client import MQTTClient
from runner.mqtt.feedback import FeedbackTracker
from runner.mqtt.handler import MessageHandler
from runner.mqtt.registry import DeviceRegistry
from tests.brokers import Mosquitto
from tests.conftest import wait_until

PRESENCE = "runner/room1/status"
_ids = itertools.count(1)


@dataclass
class Stack:
    """Client + handler + registry + tracker wired as the room service wires them."""

    client: MQTTClient
    registry: DeviceRegistry
    tracker: FeedbackTracker
    handler: MessageHandler

    def wait_subscribed(self, timeout: float = 5.0) -> None:
        """Our own publish after SUBSCRIBE comes back only once the subscription is live."""
        before = self.messages_in()
        probe = f"probe{next(_ids)}/status"

        def live() -> bool:
            self.client.publish(probe, "probe", qos=0)
            return self.messages_in() > before

        wait_until(live, timeout, interval=0.05, what="our subscriptions to be live")

    def messages_in(self) -> int:
        return cast(int, self.client.health()["messages_in"])

    def close(self) -> None:
        self.client.disconnect()
        self.tracker.close()


def make_stack(host: str, port: int, *, timeout: float = 1.0,
               devices: Mapping[str, tuple[str, ...]] | None = None,
               connect_retries: int = 1, retry_delay: float = 0.05,
               max_backoff: float = 0.3, **client_kw: object) -> Stack:
    registry = DeviceRegistry()
    tracker = FeedbackTracker(timeout=timeout, devices=devices)
    handler = MessageHandler(registry, tracker)
    client = MQTTClient(host, port, f"runner-test-{next(_ids)}",
                        connect_retries=connect_retries, retry_delay=retry_delay,
                        max_backoff=max_backoff, presence_topic=PRESENCE,
                        **client_kw)  # type: ignore[arg-type]
    client.set_handlers(on_message=handler.handle_message)
    for topic_filter in handler.topic_filters():
        client.subscribe(topic_filter)
    return Stack(client, registry, tracker, handler)


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
