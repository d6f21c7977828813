"""Hostile incoming traffic is cut early: the broker is asked (MQTT 5 CONNECT Maximum
Packet Size) not to send big packets at all, and what still comes with a huge topic or
payload is dropped before any decoding, with rate-limited log lines."""

from __future__ import annotations

import logging

import paho.mqtt.client as mqtt
import pytest

from runner.mqtt.client import (
    MAX_INCOMING_PACKET,
    MAX_INCOMING_TOPIC,
    MQTTClient,
    connect_properties,
)
from tests.brokers import Mosquitto
from tests.conftest import Recorder, wait_until
from tests.mqtt_support import stack_on


def _message(topic: bytes, payload: bytes) -> mqtt.MQTTMessage:
    msg = mqtt.MQTTMessage(topic=topic)
    msg.payload = payload
    return msg


class _Topicless(bytes):
    def decode(self, *_a: object, **_k: object) -> str:
        raise AssertionError("the topic was decoded")


def test_connect_asks_the_broker_for_a_maximum_packet_size() -> None:
    # paho's Properties sets its attributes by name: not in its type.
    assert getattr(connect_properties(), "MaximumPacketSize") == MAX_INCOMING_PACKET  # noqa: B009


def test_oversized_topics_and_payloads_are_dropped_before_decoding(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mqtt")
    client = MQTTClient()
    seen: list[str] = []
    client.set_handlers(on_message=lambda topic, _p, _r: seen.append(topic))
    huge_topic = _Topicless(b"a/" * (MAX_INCOMING_TOPIC // 2 + 1))
    for _ in range(1000):
        client._handle_message(None, None, _message(huge_topic, b"x"))  # type: ignore[arg-type]
        client._handle_message(None, None,  # type: ignore[arg-type]
                               _message(b"room1/status", b"x" * (MAX_INCOMING_PACKET + 1)))
    client._handle_message(None, None, _message(b"room1/status", b"OK"))  # type: ignore[arg-type]
    assert seen == ["room1/status"]  # only the small one reached the handler
    assert client.health().messages_dropped == 2000
    assert sum("dropped incoming message" in m for m in caplog.messages) == 1


def test_the_broker_never_sends_a_packet_over_the_limit_and_the_runner_stays_connected(
        mosquitto: Mosquitto, recorder: Recorder) -> None:
    with stack_on(mosquitto) as stack:
        got: list[tuple[str, int]] = []
        stack.client.set_handlers(on_message=lambda t, p, _r: got.append((t, len(p))))
        stack.client.subscribe("room1/junk", qos=1)
        stack.wait_subscribed()
        big = b"j" * (MAX_INCOMING_PACKET + 10_000)
        recorder.client.publish("room1/junk", big, qos=1).wait_for_publish(5)
        recorder.client.publish("room1/junk", b"after", qos=1).wait_for_publish(5)
        wait_until(lambda: ("room1/junk", 5) in got, what="the small message after the big")
        # The broker discarded the big one.
        assert [m for m in got if m[0] == "room1/junk"] == [("room1/junk", 5)]
        assert stack.client.health().messages_dropped == 0  # never even reached us
        assert stack.client.connected and stack.client.health().reconnects == 0
