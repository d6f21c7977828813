"""Message routing: presence to the registry, OK/ERROR to the tracker, the rest to routes."""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Sequence

from runner.mqtt.feedback import FeedbackTracker, parse_feedback
from runner.mqtt.registry import OFFLINE, ONLINE, DeviceRegistry
from runner.ratelimitlog import RateLimitedLog
from runner.topics import TopicFilter

log = logging.getLogger("mqtt_handler")

DEFAULT_MAX_PAYLOAD = 65536
ROOM_FEEDBACK_TOPICS = ("+/status",)
Route = Callable[[str, str], None]
# Tabs and line ends are text; other control characters mean a binary payload.
_BINARY = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# A topic with control characters would print as forged log lines and terminal escapes.
# mosquitto disconnects a client that sends one; other brokers (amqtt) pass it on.
_CONTROL_IN_TOPIC = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def feedback_filters(overrides: Iterable[str], *, status_topics: Sequence[str] = (),
                     ) -> tuple[str, ...]:
    """`+/status` and every `feedback_topic` override neither it nor `status_topics` covers.

    Without its own subscription an answer on `room1/door/ack` never reaches the tracker;
    with two overlapping ones the broker may deliver one OK twice.
    """
    covered = [TopicFilter(f) for f in (*ROOM_FEEDBACK_TOPICS, *status_topics)]
    extra = [t for t in dict.fromkeys(overrides)
             if not any(f.matches(t) for f in covered)]
    return (*ROOM_FEEDBACK_TOPICS, *extra)


class MessageHandler:
    """Decides what one incoming message means; never raises, drops what it cannot read."""

    def __init__(self, registry: DeviceRegistry, tracker: FeedbackTracker, *,
                 status_topics: Sequence[str] = ("devices/+/status",),
                 max_payload: int = DEFAULT_MAX_PAYLOAD,
                 feedback_topics: Sequence[str] = ROOM_FEEDBACK_TOPICS) -> None:
        self._registry = registry
        self._tracker = tracker
        self._status_topics = tuple(TopicFilter(f) for f in status_topics)
        self._feedback_topics = tuple(TopicFilter(f) for f in feedback_topics)
        self._max_payload = max_payload
        self._lock = threading.Lock()
        self._routes: list[tuple[TopicFilter, Route]] = []
        # Junk comes in floods: one line per kind per period, with a count.
        self._drops = RateLimitedLog(log)

    def add_route(self, topic_filter: str, callback: Route) -> None:
        """Also hand messages matching `topic_filter` to `callback(topic, text)`."""
        with self._lock:
            self._routes.append((TopicFilter(topic_filter), callback))

    def set_feedback_topics(self, feedback_topics: Sequence[str]) -> None:
        """Listen for feedback on these filters from now on (a reload's new overrides)."""
        filters = tuple(TopicFilter(f) for f in feedback_topics)
        with self._lock:
            self._feedback_topics = filters  # one assignment: readers see old or new

    def topic_filters(self) -> tuple[str, ...]:
        """Every filter the client must subscribe to for this handler, without repeats."""
        with self._lock:
            routes = [f.text for f, _ in self._routes]
        own = [f.text for f in (*self._status_topics, *self._feedback_topics)]
        return tuple(dict.fromkeys([*own, *routes]))

    def handle_message(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """Route one message; anything unreadable is logged with its topic and dropped."""
        try:
            self._handle(topic, payload, retain)
        except Exception:
            # A bug must not stop the next message from being handled.
            log.exception("message on %s could not be handled and was dropped", topic)

    def _handle(self, topic: str, payload: bytes, retain: bool) -> None:
        if _CONTROL_IN_TOPIC.search(topic):
            self._drops.warning("control", "dropped message on a topic with control "
                                "characters: %r", topic[:120])
            return
        if len(payload) > self._max_payload:
            self._drops.warning("oversized", "dropped oversized message on %s: %d bytes, "
                                "the limit is %d", topic, len(payload), self._max_payload)
            return
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            self._drops.warning("binary-utf8", "dropped binary message on %s: %d bytes, "
                                "not UTF-8 text", topic, len(payload))
            return
        if _BINARY.search(text):
            self._drops.warning("binary", "dropped binary message on %s: %d bytes with "
                                "control characters", topic, len(payload))
            return

        levels = topic.split("/")
        routed = self._run_routes(topic, levels, text)
        for status_filter in self._status_topics:
            if status_filter.match(levels):
                self._status(topic, levels, status_filter, text, retain)
                return
        if any(f.match(levels) for f in self._feedback_topics):
            self._feedback(topic, text, retain, None)
            return
        if not routed:
            log.debug("unknown message on %s: %r", topic, text[:80])

    def _status(self, topic: str, levels: list[str], status_filter: TopicFilter, text: str,
                retain: bool) -> None:
        """Presence to the registry; OK/ERROR on a device's own topic to the tracker."""
        device = status_filter.wildcard_part(levels)
        word = text.strip().lower()
        if word in (ONLINE, OFFLINE):
            self._registry.update_device_status(device, word)
        elif not word:
            log.debug("empty status on %s (a retained message cleared)", topic)
        else:
            self._feedback(topic, text, retain, device)

    def _run_routes(self, topic: str, levels: list[str], text: str) -> bool:
        if not self._routes:  # the common case for presence; a list read is atomic
            return False
        with self._lock:
            routes = [cb for f, cb in self._routes if f.match(levels)]
        for callback in routes:
            try:
                callback(topic, text)
            except Exception:
                log.exception("route for %s failed; message dropped for it", topic)
        return bool(routes)

    def _feedback(self, topic: str, text: str, retain: bool, device: str | None) -> None:
        if retain:
            # A retained OK was said long ago, about some earlier command.
            log.debug("retained feedback on %s ignored: it answers no current command", topic)
            return
        if parse_feedback(text) is None:
            if text.lstrip().startswith(("{", "[")):
                try:
                    json.loads(text)
                except ValueError as err:
                    self._drops.warning("json", "dropped malformed JSON on %s: %s", topic, err)
                    return
                self._drops.warning("json-shape", 'dropped JSON on %s: expected {"status": '
                                    '"OK" or "ERROR", "topic": ...}', topic)
                return
            log.debug("unknown status on %s: %r", topic, text[:80])
            return
        self._tracker.handle_feedback_message(topic, text, device=device)
