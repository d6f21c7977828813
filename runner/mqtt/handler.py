"""Message routing: presence to the registry, OK/ERROR to the tracker, the rest to routes."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence

from paho.mqtt.client import topic_matches_sub

from runner.mqtt.feedback import FeedbackTracker, parse_feedback
from runner.mqtt.registry import OFFLINE, ONLINE, DeviceRegistry

log = logging.getLogger("mqtt_handler")

DEFAULT_MAX_PAYLOAD = 65536
ROOM_FEEDBACK_TOPICS = ("+/status",)
Route = Callable[[str, str], None]
# Tabs and line ends are text; other control characters mean a binary payload.
_CONTROL = {chr(c) for c in range(32)} - {"\t", "\n", "\r"} | {"\x7f"}


def device_id_from(topic_filter: str, topic: str) -> str:
    """The part of `topic` a wildcard matched: `devices/+/status` gives the device id."""
    parts = topic.split("/")
    picked: list[str] = []
    for i, level in enumerate(topic_filter.split("/")):
        if level == "+" and i < len(parts):
            picked.append(parts[i])
        elif level == "#":
            picked.extend(parts[i:])
            break
    return "/".join(picked) or topic


class MessageHandler:
    """Decides what one incoming message means; never raises, drops what it cannot read."""

    def __init__(self, registry: DeviceRegistry, tracker: FeedbackTracker, *,
                 status_topics: Sequence[str] = ("devices/+/status",),
                 max_payload: int = DEFAULT_MAX_PAYLOAD,
                 feedback_topics: Sequence[str] = ROOM_FEEDBACK_TOPICS) -> None:
        self._registry = registry
        self._tracker = tracker
        self._status_topics = tuple(status_topics)
        self._feedback_topics = tuple(feedback_topics)
        self._max_payload = max_payload
        self._lock = threading.Lock()
        self._routes: list[tuple[str, Route]] = []

    def add_route(self, topic_filter: str, callback: Route) -> None:
        """Also hand messages matching `topic_filter` to `callback(topic, text)`."""
        with self._lock:
            self._routes.append((topic_filter, callback))

    def topic_filters(self) -> tuple[str, ...]:
        """Every filter the client must subscribe to for this handler, without repeats."""
        with self._lock:
            routes = [f for f, _ in self._routes]
        return tuple(dict.fromkeys([*self._status_topics, *self._feedback_topics, *routes]))

    def handle_message(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """Route one message; anything unreadable is logged with its topic and dropped."""
        try:
            self._handle(topic, payload, retain)
        except Exception:
            # A bug must not stop the next message from being handled.
            log.exception("message on %s could not be handled and was dropped", topic)

    def _handle(self, topic: str, payload: bytes, retain: bool) -> None:
        if len(payload) > self._max_payload:
            log.warning("dropped oversized message on %s: %d bytes, the limit is %d",
                        topic, len(payload), self._max_payload)
            return
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            log.warning("dropped binary message on %s: %d bytes, not UTF-8 text",
                        topic, len(payload))
            return
        if not _CONTROL.isdisjoint(text):
            log.warning("dropped binary message on %s: %d bytes with control characters",
                        topic, len(payload))
            return

        routed = self._run_routes(topic, text)
        status_filter = next((f for f in self._status_topics if topic_matches_sub(f, topic)),
                             None)
        if status_filter is not None:
            device = device_id_from(status_filter, topic)
            word = text.strip().lower()
            if word in (ONLINE, OFFLINE):
                self._registry.update_device_status(device, word)
                return
            if not word:
                log.debug("empty status on %s (a retained message cleared)", topic)
                return
            self._feedback(topic, text, retain, device)
            return
        if any(topic_matches_sub(f, topic) for f in self._feedback_topics):
            self._feedback(topic, text, retain, None)
            return
        if not routed:
            log.debug("unknown message on %s: %r", topic, text[:80])

    def _run_routes(self, topic: str, text: str) -> bool:
        with self._lock:
            routes = [cb for f, cb in self._routes if topic_matches_sub(f, topic)]
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
                    log.warning("dropped malformed JSON on %s: %s", topic, err)
                    return
                log.warning('dropped JSON on %s: expected {"status": "OK" or "ERROR", '
                            '"topic": ...}', topic)
                return
            log.debug("unknown status on %s: %r", topic, text[:80])
            return
        self._tracker.handle_feedback_message(topic, text, device=device)
