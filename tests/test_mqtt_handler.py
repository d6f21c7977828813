"""Message handler: bad payloads dropped with their topic, routes, and 10,000 random messages."""

from __future__ import annotations

import json
import logging
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.mqtt.feedback import FeedbackTracker
from runner.mqtt.handler import MessageHandler, feedback_filters
from runner.mqtt.registry import DeviceRegistry
from runner.records import Delivery, FeedbackResult, FeedbackStatus
from tests.brokers import Mosquitto
from tests.conftest import wait_until
from tests.mqtt_support import Device, stack_on


@pytest.mark.parametrize(("bad", "words"), [
    (b"\xff\xfe\x00binary", "binary"),
    (b"x" * 2000, "oversized"),
    (b'{"status": "OK", "topic": ', "malformed JSON"),
    (b'{"state": "fine"}', "expected"),
    (b"\x00\x01\x02", "binary"),
])
def test_bad_message_is_logged_with_topic_and_the_next_one_is_handled(
        mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture, bad: bytes, words: str) -> None:
    caplog.set_level(logging.DEBUG, logger="mqtt_handler")
    with stack_on(mosquitto) as stack:
        # A small limit so that "oversized" is cheap to send.
        handler = MessageHandler(stack.registry, stack.tracker, max_payload=1024)
        stack.client.set_handlers(on_message=handler.handle_message)
        stack.tracker.enable_feedback_tracking()
        results: list[FeedbackResult] = []
        assert stack.client.publish("room1/light", "ON") is Delivery.SENT
        stack.tracker.track_published_message("room1/light", "ON", on_result=results.append)
        device = Device(mosquitto)
        try:
            device.send("room1/status", bad)
            device.send("room1/status", "OK")
            wait_until(lambda: results, what="the OK after the bad message")
        finally:
            device.close()
        assert results[0].status is FeedbackStatus.OK
        dropped = [r for r in caplog.records
                   if r.name == "mqtt_handler" and r.levelno == logging.WARNING]
        assert len(dropped) == 1, caplog.messages
        assert "room1/status" in dropped[0].getMessage()
        assert words in dropped[0].getMessage()


def test_retained_feedback_confirms_nothing(mosquitto: Mosquitto) -> None:
    device = Device(mosquitto)
    device.send("room1/status", "OK", retain=True)  # said long ago
    with stack_on(mosquitto, timeout=0.3) as stack:
        stack.tracker.enable_feedback_tracking()
        results: list[FeedbackResult] = []
        stack.tracker.track_published_message("room1/light", "ON", on_result=results.append)
        # Resubscribing replays the retained OK now, while the command is pending.
        stack.client.subscribe("room1/status")
        wait_until(lambda: results, what="a result")
        assert results[0].status is FeedbackStatus.TIMEOUT
    device.close()


def test_routes_get_their_messages_and_a_failing_route_harms_nothing(
        caplog: pytest.LogCaptureFixture) -> None:
    registry, tracker = DeviceRegistry(), FeedbackTracker()
    handler = MessageHandler(registry, tracker)
    got: list[tuple[str, str]] = []

    def broken(_topic: str, _text: str) -> None:
        raise RuntimeError("bug in a route")

    handler.add_route("runner/room1/cmd", broken)
    handler.add_route("room1/button", lambda t, p: got.append((t, p)))
    handler.handle_message("runner/room1/cmd", b'{"command": "panic"}')
    handler.handle_message("room1/button", b"PRESSED")
    handler.handle_message("devices/esp32_07/status", b"online")
    assert got == [("room1/button", "PRESSED")]
    assert registry.get_connected_devices() == ["esp32_07"]
    assert any("runner/room1/cmd" in m for m in caplog.messages)
    assert set(handler.topic_filters()) == {
        "devices/+/status", "+/status", "runner/room1/cmd", "room1/button"}
    tracker.close()


def test_unknown_topics_are_debug_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="mqtt_handler")
    tracker = FeedbackTracker()
    MessageHandler(DeviceRegistry(), tracker).handle_message("museum/weather", b"sunny")
    [record] = [r for r in caplog.records if r.name == "mqtt_handler"]
    assert record.levelno == logging.DEBUG and "museum/weather" in record.getMessage()
    tracker.close()


def test_feedback_filters_add_only_uncovered_feedback_topics() -> None:
    assert feedback_filters(["room1/door/ack", "room1/status", "devices/esp32_01/status",
                             "room1/door/ack"], status_topics=["devices/+/status"]) == (
        "+/status", "room1/door/ack")


TOPICS = st.one_of(
    st.sampled_from(["room1/status", "devices/esp32_01/status", "devices/x/status",
                     "runner/room1/cmd", "room1/light", "", "/", "+/status", "#"]),
    st.builds(lambda a, b: f"{a}/{b}", st.text(max_size=12), st.sampled_from(["status", "x"])),
    st.text(max_size=40),
)
PAYLOADS = st.one_of(
    st.sampled_from([b"OK", b"ERROR", b"online", b"offline", b"", b"{", b"null", b"[]",
                     b'{"status": "OK", "topic": "room1/light"}', b'{"status": 1}',
                     b'{"status": "ERROR", "topic": null}', b"\xff" * 70000]),
    st.binary(max_size=64),
    st.text(max_size=64).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.dictionaries(st.sampled_from(["status", "topic", "x"]),
                    st.one_of(st.none(), st.integers(), st.text(max_size=10),
                              st.sampled_from(["OK", "ERROR", "room1/light"])),
                    ).map(lambda d: json.dumps(d).encode()),
)


def test_ten_thousand_random_messages_never_escape_the_handler() -> None:
    registry = DeviceRegistry()
    tracker = FeedbackTracker(timeout=30.0, devices={"esp32_01": ("room1/light",)})
    tracker.enable_feedback_tracking()
    handler = MessageHandler(registry, tracker)
    route_calls: list[str] = []
    handler.add_route("runner/room1/cmd", lambda t, p: route_calls.append(p))
    handled = 0
    lock = threading.Lock()

    @settings(max_examples=100, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.lists(st.tuples(TOPICS, PAYLOADS, st.booleans()), min_size=100, max_size=100))
    def run(messages: list[tuple[str, bytes, bool]]) -> None:
        nonlocal handled
        for _ in range(3):  # keep commands pending so feedback paths are exercised
            tracker.track_published_message("room1/light", "ON")
        for topic, payload, retain in messages:
            handler.handle_message(topic, payload, retain)  # must never raise
        with lock:
            handled += len(messages)

    run()
    assert handled == 10_000
    # Still working normally afterwards.
    registry.clear_devices()
    handler.handle_message("devices/esp32_99/status", b"online")
    assert registry.get_connected_devices() == ["esp32_99"]
    tracker.close()
