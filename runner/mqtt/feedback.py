"""Feedback tracking: which published commands were confirmed OK, failed, or timed out."""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from runner.model import FeedbackPolicy, Route
from runner.records import FeedbackResult, FeedbackStatus
from runner.topics import Topic

log = logging.getLogger("mqtt_feedback")

ResultCallback = Callable[[FeedbackResult], None]

RECENT_RESULTS = 200
# A device on loopback can answer before the publishing thread has registered the
# command; an unmatched answer is kept this long for a command tracked right after.
EARLY_FEEDBACK_WINDOW = 0.25
STATUS_WORDS = {"OK": FeedbackStatus.OK, "ERROR": FeedbackStatus.ERROR}


def feedback_topic_for(topic: str) -> str:
    """`room1/light` expects its feedback on `room1/status`."""
    return Topic(topic).room_status


def parse_feedback(payload: str) -> tuple[FeedbackStatus, str | None] | None:
    """`OK` / `ERROR`, or JSON `{"status": "OK", "topic": "room1/light"}`; None if neither."""
    text = payload.strip()
    if text.startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError:
            return None
        if not isinstance(doc, dict):
            return None
        status = doc.get("status")
        topic = doc.get("topic")
        if not isinstance(status, str) or status.strip().upper() not in STATUS_WORDS:
            return None
        if topic is not None and not isinstance(topic, str):
            return None
        return STATUS_WORDS[status.strip().upper()], topic
    word = STATUS_WORDS.get(text.upper())
    return None if word is None else (word, None)


@dataclass
class _Pending:
    command_id: int
    topic: str
    message: str
    feedback_topic: str
    sent_at: float
    timeout: float
    on_result: ResultCallback | None
    stray: bool = False  # sent outside a run: its answer is absorbed, never reported


@dataclass(frozen=True)
class _Early:
    at: float
    topic: str  # where it arrived
    status: FeedbackStatus
    named_topic: str | None
    device: str | None


class FeedbackTracker:
    """Matches OK/ERROR answers to pending commands; one timer thread times them out."""

    def __init__(self, timeout: float = 1.0,
                 devices: Mapping[str, tuple[str, ...]] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 early_window: float = EARLY_FEEDBACK_WINDOW) -> None:
        self.timeout = timeout
        self._devices = dict(devices or {})
        self._clock = clock
        self._early_window = early_window
        self._cond = threading.Condition()
        self._enabled = False
        self._pending: dict[int, _Pending] = {}  # insertion order is publish order
        self._deadlines: list[tuple[float, int]] = []  # heap; stale entries skipped
        self._early: deque[_Early] = deque(maxlen=64)
        self._ids = itertools.count(1)
        self._recent: deque[FeedbackResult] = deque(maxlen=RECENT_RESULTS)
        self._listeners: list[ResultCallback] = []
        self._timer: threading.Thread | None = None
        self._closed = False

    # -- switching ---------------------------------------------------------------

    def enable_feedback_tracking(self) -> None:
        with self._cond:
            self._enabled = True

    def disable_feedback_tracking(self) -> None:
        """Stop expecting answers; commands still pending are dropped without a result."""
        with self._cond:
            self._enabled = False
            dropped = len(self._pending)
            self._pending = {i: p for i, p in self._pending.items() if p.stray}
            dropped -= len(self._pending)
            self._deadlines = [(p.sent_at + p.timeout, i) for i, p in self._pending.items()]
            heapq.heapify(self._deadlines)
            self._early.clear()
            self._cond.notify_all()
        if dropped:
            log.debug("feedback tracking off: %d pending command(s) dropped", dropped)

    @property
    def enabled(self) -> bool:
        with self._cond:
            return self._enabled

    def _should_expect_feedback(self, topic: str, feedback: FeedbackPolicy) -> bool:
        """Media plays locally and `feedback: none` asks for nothing."""
        if feedback is FeedbackPolicy.NONE or Route.for_topic(topic) is not Route.MQTT:
            return False
        return self._enabled

    # -- commands ----------------------------------------------------------------

    def track_published_message(self, topic: str, message: str, *,
                                feedback: FeedbackPolicy = FeedbackPolicy.EXPECT,
                                timeout: float | None = None,
                                feedback_topic: str | None = None,
                                on_result: ResultCallback | None = None) -> int | None:
        """Expect an answer to a command just published; its id, or None if none expected."""
        with self._cond:
            if not self._should_expect_feedback(topic, feedback):
                return None
            now = self._clock()
            pending = _Pending(next(self._ids), topic, message,
                               feedback_topic or feedback_topic_for(topic), now,
                               self.timeout if timeout is None else timeout, on_result)
            early = self._take_early(pending, now)
            if early is None:
                self._pending[pending.command_id] = pending
                deadline = (now + pending.timeout, pending.command_id)
                heapq.heappush(self._deadlines, deadline)
                self._ensure_timer()
                if self._deadlines[0] == deadline:
                    # Only an earlier deadline changes the timer's wait; waking it for
                    # every command would cost each publish a thread switch.
                    self._cond.notify_all()
        if early is not None:
            self._finish(pending, early.status, 0.0, early.device)
        return pending.command_id

    def expect_stray_answer(self, topic: str, *, feedback_topic: str | None = None,
                            timeout: float | None = None) -> None:
        """A command sent outside a run (on_stop, safe state) may still be answered.

        Its OK/ERROR is absorbed until `timeout`, tracking on or off, so that it cannot
        confirm the next run's first command on the same feedback topic (a `restart`).
        """
        if Route.for_topic(topic) is not Route.MQTT:
            return
        with self._cond:
            now = self._clock()
            stray = _Pending(next(self._ids), topic, "", feedback_topic or
                             feedback_topic_for(topic), now,
                             self.timeout if timeout is None else timeout, None, stray=True)
            self._pending[stray.command_id] = stray
            heapq.heappush(self._deadlines, (now + stray.timeout, stray.command_id))
            self._ensure_timer()
            self._cond.notify_all()

    def _take_early(self, pending: _Pending, now: float) -> _Early | None:
        while self._early and now - self._early[0].at > self._early_window:
            self._early.popleft()
        for early in self._early:
            if self._answers(early.topic, early.named_topic, early.device, pending):
                self._early.remove(early)
                return early
        return None

    def _answers(self, topic: str, named_topic: str | None, device: str | None,
                 pending: _Pending) -> bool:
        if named_topic is not None:
            return pending.topic == named_topic
        if device is not None and pending.topic in self._devices.get(device, ()):
            return True
        return pending.feedback_topic == topic

    # -- answers -----------------------------------------------------------------

    def handle_feedback_message(self, topic: str, payload: str, *,
                                device: str | None = None) -> None:
        """An answer on `topic`; `device` when it came on that device's own status topic."""
        parsed = parse_feedback(payload)
        if parsed is None:
            log.debug("not feedback on %s: %r", topic, payload[:80])
            return
        status, named_topic = parsed
        if device is None:
            device = self._device_of_status_topic(topic)
        now = self._clock()
        with self._cond:
            match = next((p for p in self._pending.values()
                          if (self._enabled or p.stray)
                          and self._answers(topic, named_topic, device, p)), None)
            if match is None:
                if not self._enabled:
                    log.debug("feedback on %s ignored: tracking is off", topic)
                    return
                self._early.append(_Early(now, topic, status, named_topic, device))
                log.debug("feedback %s on %s matches no pending command", status.value, topic)
                return
            del self._pending[match.command_id]
        if match.stray:
            log.debug("feedback %s on %s answers %s, sent by the safe state", status.value,
                      topic, match.topic)
            return
        self._finish(match, status, now - match.sent_at, device)

    def _device_of_status_topic(self, topic: str) -> str | None:
        # `devices/<id>/status` or any status topic naming a device from the config's map.
        named = Topic(topic)
        if named.ends_in("status"):
            return next((d for d in named.levels[:-1] if d in self._devices), None)
        return None

    # -- results -----------------------------------------------------------------

    def _finish(self, pending: _Pending, status: FeedbackStatus, latency: float | None,
                device: str | None) -> FeedbackResult:
        if device is None:
            device = next((d for d, topics in self._devices.items()
                           if pending.topic in topics), None)
        result = FeedbackResult(pending.command_id, pending.topic, pending.message, status,
                                latency, device)
        if status is FeedbackStatus.OK:
            log.info("✅ Feedback OK: %s (%.3fs)", pending.topic, latency or 0.0)
        elif status is FeedbackStatus.ERROR:
            log.warning("❌ Feedback ERROR: %s (%.3fs)", pending.topic, latency or 0.0)
        else:
            log.warning("⏰ Feedback TIMEOUT: %s (>%.3fs)", pending.topic, pending.timeout)
        with self._cond:
            self._recent.append(result)
            listeners = list(self._listeners)
        for callback in ([pending.on_result] if pending.on_result else []) + listeners:
            try:
                callback(result)
            except Exception:
                log.exception("feedback callback failed for %s", pending.topic)
        return result

    def add_result_listener(self, listener: ResultCallback) -> None:
        with self._cond:
            self._listeners.append(listener)

    def recent_results(self, n: int = 50) -> list[FeedbackResult]:
        """The last `n` results, oldest first."""
        with self._cond:
            return list(self._recent)[-n:] if n > 0 else []

    def pending_count(self) -> int:
        with self._cond:
            return len(self._pending)

    # -- timeouts ----------------------------------------------------------------

    def expire_due(self) -> list[FeedbackResult]:
        """Time out every command past its deadline now; the timer thread calls this."""
        now = self._clock()
        due: list[_Pending] = []
        with self._cond:
            while self._deadlines and self._deadlines[0][0] <= now:
                _, command_id = heapq.heappop(self._deadlines)
                pending = self._pending.pop(command_id, None)
                if pending is not None:
                    due.append(pending)
        return [self._finish(p, FeedbackStatus.TIMEOUT, None, None) for p in due
                if not p.stray]

    def _ensure_timer(self) -> None:
        if self._timer is None and not self._closed:
            self._timer = threading.Thread(target=self._run_timer, name="feedback-timer",
                                           daemon=True)
            self._timer.start()

    def _run_timer(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                wait = (max(0.0, self._deadlines[0][0] - self._clock())
                        if self._deadlines else None)
                if wait is None or wait > 0:
                    self._cond.wait(wait)
                    continue
            self.expire_due()

    def close(self) -> None:
        """Stop the timer thread; pending commands get no result."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._timer is not None and self._timer is not threading.current_thread():
            self._timer.join(timeout=2.0)
