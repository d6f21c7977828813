"""Feedback tracker through a real mosquitto: OK, ERROR, TIMEOUT, matching rules, one timer."""

from __future__ import annotations

import json
import logging
import re
import threading
import time

import pytest

from runner.model import FeedbackPolicy
from runner.mqtt.feedback import FeedbackTracker, parse_feedback
from runner.records import Delivery, FeedbackResult, FeedbackStatus
from tests.brokers import Mosquitto
from tests.conftest import wait_until
from tests.mqtt_support import Device, Stack, stack_on


class Results:
    """Collects results from on_result callbacks; wait() is bounded."""

    def __init__(self) -> None:
        self.items: list[FeedbackResult] = []
        self.lock = threading.Lock()

    def __call__(self, result: FeedbackResult) -> None:
        with self.lock:
            self.items.append(result)

    def wait(self, count: int = 1, timeout: float = 5.0) -> list[FeedbackResult]:
        wait_until(lambda: len(self.items) >= count, timeout, what=f"{count} feedback result(s)")
        with self.lock:
            return list(self.items)


def send(stack: Stack, topic: str, message: str, results: Results, **kw: object) -> int:
    assert stack.client.publish(topic, message) is Delivery.SENT
    cid = stack.tracker.track_published_message(topic, message, on_result=results, **kw)  # type: ignore[arg-type]
    assert cid is not None
    return cid


@pytest.fixture
def device(mosquitto: Mosquitto):  # type: ignore[no-untyped-def]
    d = Device(mosquitto)
    yield d
    d.close()


def test_ok_is_measured_from_publish_to_answer(mosquitto: Mosquitto, device: Device,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mqtt_feedback")
    device.answer("room1/light", "OK", delay=0.15)
    with stack_on(mosquitto) as stack:
        stack.tracker.enable_feedback_tracking()
        results = Results()
        cid = send(stack, "room1/light", "ON", results)
        [result] = results.wait()
        assert (result.command_id, result.topic, result.message) == (cid, "room1/light", "ON")
        assert result.status is FeedbackStatus.OK
        assert result.latency is not None and 0.15 <= result.latency < 2.0
        line = f"✅ Feedback OK: room1/light ({result.latency:.3f}s)"
        assert line in caplog.messages
        assert [r.name for r in caplog.records if r.getMessage() == line] == ["mqtt_feedback"]
        assert stack.tracker.pending_count() == 0
        assert stack.tracker.recent_results() == [result]


def test_two_in_flight_are_resolved_in_publish_order(mosquitto: Mosquitto, device: Device) -> None:
    with stack_on(mosquitto) as stack:
        stack.tracker.enable_feedback_tracking()
        results = Results()
        first = send(stack, "room1/light", "ON", results)
        second = send(stack, "room1/motor", "START", results)
        device.send("room1/status", "OK")
        device.send("room1/status", "ERROR")
        got = results.wait(2)
        assert [(r.command_id, r.status) for r in got] == [
            (first, FeedbackStatus.OK), (second, FeedbackStatus.ERROR)]


def test_json_feedback_resolves_the_command_it_names(mosquitto: Mosquitto,
                                                     device: Device) -> None:
    with stack_on(mosquitto) as stack:
        stack.tracker.enable_feedback_tracking()
        results = Results()
        light = send(stack, "room1/light", "ON", results)
        motor = send(stack, "room1/motor", "START", results)
        device.send("room1/status", json.dumps({"status": "OK", "topic": "room1/motor"}))
        [named] = results.wait(1)
        assert (named.command_id, named.topic, named.status) == (
            motor, "room1/motor", FeedbackStatus.OK)
        assert stack.tracker.pending_count() == 1  # the light still waits
        device.send("room1/status", '{"status": "ERROR", "topic": "room1/light"}')
        assert [(r.command_id, r.status) for r in results.wait(2)][1] == (
            light, FeedbackStatus.ERROR)


def test_error_is_reported_and_logged(mosquitto: Mosquitto, device: Device,
                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mqtt_feedback")
    device.answer("room1/steam", "ERROR")
    with stack_on(mosquitto) as stack:
        stack.tracker.enable_feedback_tracking()
        results = Results()
        send(stack, "room1/steam", "ON", results)
        [result] = results.wait()
        assert result.status is FeedbackStatus.ERROR and result.latency is not None
        assert any(re.fullmatch(r"❌ Feedback ERROR: room1/steam \(\d+\.\d{3}s\)", m)
                   for m in caplog.messages), caplog.messages


def test_timeout_after_the_shrunk_timeout(mosquitto: Mosquitto,
                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mqtt_feedback")
    with stack_on(mosquitto, timeout=0.2) as stack:
        stack.tracker.enable_feedback_tracking()
        results = Results()
        t0 = time.monotonic()
        send(stack, "room1/light", "ON", results)
        [result] = results.wait()
        assert time.monotonic() - t0 >= 0.2
        assert result.status is FeedbackStatus.TIMEOUT and result.latency is None
        assert "⏰ Feedback TIMEOUT: room1/light (>0.200s)" in caplog.messages
        assert stack.tracker.pending_count() == 0


def test_feedback_is_ignored_while_tracking_is_off(mosquitto: Mosquitto,
                                                   device: Device) -> None:
    with stack_on(mosquitto, timeout=0.3) as stack:
        handled: list[str] = []

        def handle_then_note(topic: str, payload: bytes, retain: bool) -> None:
            stack.handler.handle_message(topic, payload, retain)
            handled.append(payload.decode(errors="replace"))

        stack.client.set_handlers(on_message=handle_then_note)
        results = Results()
        stack.tracker.add_result_listener(results)
        # Off: nothing is tracked, and an answer now must not confirm a later command.
        assert stack.tracker.track_published_message("room1/light", "ON") is None
        device.send("room1/status", "OK")
        wait_until(lambda: "OK" in handled, what="the OK to be handled")
        stack.tracker.enable_feedback_tracking()
        send(stack, "room1/light", "ON", Results())
        assert results.wait()[0].status is FeedbackStatus.TIMEOUT
        # Switching off drops what is pending: a later answer gives no result.
        send(stack, "room1/light", "OFF", results)
        stack.tracker.disable_feedback_tracking()
        assert stack.tracker.pending_count() == 0
        handled.clear()
        device.send("room1/status", "OK")
        wait_until(lambda: "OK" in handled, what="the late OK to be handled")
        assert len(results.items) == 1


def test_device_status_ok_resolves_that_devices_oldest_command(mosquitto: Mosquitto,
                                                               device: Device) -> None:
    devices = {"esp32_01": ("room1/light", "room1/motor"), "esp32_02": ("room1/steam",)}
    with stack_on(mosquitto, devices=devices) as stack:
        stack.tracker.enable_feedback_tracking()
        results = Results()
        steam = send(stack, "room1/steam", "ON", results)  # older, but another device's
        light = send(stack, "room1/light", "ON", results)
        send(stack, "room1/motor", "START", results)
        device.send("devices/esp32_01/status", "OK")
        [result] = results.wait()
        assert (result.command_id, result.device) == (light, "esp32_01")
        device.send("devices/esp32_02/status", '{"status": "OK"}')
        assert [r.command_id for r in results.wait(2)][1] == steam


def test_media_and_feedback_none_expect_nothing() -> None:
    tracker = FeedbackTracker()
    tracker.enable_feedback_tracking()
    assert tracker.track_published_message("room1/audio", "bg.mp3") is None
    assert tracker.track_published_message("room1/video", "intro.mp4") is None
    assert tracker.track_published_message("room1/light", "ON",
                                           feedback=FeedbackPolicy.NONE) is None
    assert tracker.pending_count() == 0
    tracker.close()


def test_one_timer_thread_times_out_many_commands() -> None:
    tracker = FeedbackTracker(timeout=0.2)
    tracker.enable_feedback_tracking()
    results = Results()
    threads_before = threading.active_count()
    for i in range(50):
        tracker.track_published_message(f"room1/thing{i}", "ON", on_result=results,
                                        timeout=0.2 + i * 0.002)
    assert threading.active_count() - threads_before <= 1
    got = results.wait(50)
    assert all(r.status is FeedbackStatus.TIMEOUT for r in got)
    assert [r.topic for r in got] == [f"room1/thing{i}" for i in range(50)]
    assert sum(t.name == "feedback-timer" for t in threading.enumerate()) >= 1
    tracker.close()


def test_answer_just_before_tracking_still_matches() -> None:
    """On loopback a device may answer before the publishing thread registers the command."""
    tracker = FeedbackTracker()
    tracker.enable_feedback_tracking()
    results = Results()
    tracker.handle_feedback_message("room1/status", "OK")
    tracker.track_published_message("room1/light", "ON", on_result=results)
    assert results.wait()[0].status is FeedbackStatus.OK
    tracker.close()


def test_timeouts_follow_an_injected_clock() -> None:
    now = [100.0]
    tracker = FeedbackTracker(timeout=1.0, clock=lambda: now[0])
    tracker.enable_feedback_tracking()
    results = Results()
    tracker.track_published_message("room1/light", "ON", on_result=results)
    assert tracker.expire_due() == []
    assert tracker.pending_count() == 1
    now[0] = 101.5
    tracker.expire_due()  # the timer thread may get there first: either way, one result
    [result] = results.wait()
    assert result.status is FeedbackStatus.TIMEOUT
    assert tracker.pending_count() == 0
    tracker.close()


@pytest.mark.parametrize(("payload", "expected"), [
    ("OK", (FeedbackStatus.OK, None)), (" error\n", (FeedbackStatus.ERROR, None)),
    ('{"status":"OK","topic":"room1/light"}', (FeedbackStatus.OK, "room1/light")),
    ('{"status":"MAYBE"}', None), ('{"status":"OK","topic":3}', None), ("[1]", None),
    ("{oops", None), ("online", None), ("", None),
])
def test_parse_feedback(payload: str, expected: object) -> None:
    assert parse_feedback(payload) == expected


def test_an_answer_to_a_command_sent_outside_a_run_is_absorbed_not_reported() -> None:
    """on_stop / safe-state commands: their answers confirm nothing, tracking on or off."""
    tracker = FeedbackTracker(timeout=5.0)
    results = Results()
    try:
        tracker.expect_stray_answer("room1/light")
        tracker.expect_stray_answer("room1/audio")  # media: nobody answers, nothing kept
        tracker.handle_feedback_message("room1/status", "OK")  # absorbed while off
        tracker.expect_stray_answer("room1/light")
        tracker.enable_feedback_tracking()
        tracker.track_published_message("room1/light", "ON", on_result=results)
        tracker.handle_feedback_message("room1/status", "OK")  # the stray's answer
        assert results.items == []
        tracker.handle_feedback_message("room1/status", "OK")
        assert [r.status for r in results.items] == [FeedbackStatus.OK]
        tracker.expect_stray_answer("room1/light", timeout=0.05)
        wait_until(lambda: tracker.pending_count() == 0, what="the stray to time out")
        assert [r.status for r in tracker.recent_results()] == [FeedbackStatus.OK]
    finally:
        tracker.close()
