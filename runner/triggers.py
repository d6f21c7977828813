"""Triggers: an MQTT message (topic, optional payload) starts a scene, bounces ignored."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from runner.model import Trigger
from runner.topics import TopicFilter

log = logging.getLogger("triggers")

StartScene = Callable[[Trigger], None]


def _filters(triggers: tuple[Trigger, ...]) -> tuple[TopicFilter, ...]:
    return tuple(TopicFilter(t.topic) for t in triggers)


def _key(trigger: Trigger) -> tuple[str, str | None, str]:
    return (trigger.topic, trigger.message, trigger.scene)


class TriggerRouter:
    """Matches incoming messages against the configured triggers and calls `start(trigger)`.

    A trigger that fired less than its `min_interval` ago is ignored, so a bouncing
    button or a double press starts its scene once. `start` must return quickly: it
    runs on the MQTT network thread.
    """

    def __init__(self, triggers: Sequence[Trigger], start: StartScene, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._start = start
        self._clock = clock
        self._lock = threading.Lock()
        self._triggers: tuple[Trigger, ...] = tuple(triggers)
        self._filters = _filters(self._triggers)
        self._last: dict[tuple[str, str | None, str], float] = {}

    def topic_filters(self) -> list[str]:
        """The topics to subscribe to, without repeats."""
        with self._lock:
            return list(dict.fromkeys(t.topic for t in self._triggers))

    def matches(self, topic: str) -> bool:
        with self._lock:
            return any(f.matches(topic) for f in self._filters)

    def set_triggers(self, triggers: Sequence[Trigger]) -> None:
        """Replace the triggers (config reload); bounce guards of unchanged ones carry over."""
        with self._lock:
            self._triggers = tuple(triggers)
            self._filters = _filters(self._triggers)
            keep = {_key(t) for t in self._triggers}
            self._last = {k: v for k, v in self._last.items() if k in keep}

    def handle(self, topic: str, text: str) -> None:
        """One message on a trigger topic; starts every trigger it matches, at most once each."""
        payload = text.strip()
        now = self._clock()
        fired: list[Trigger] = []
        with self._lock:
            for trigger, topic_filter in zip(self._triggers, self._filters, strict=True):
                if not topic_filter.matches(topic):
                    continue
                if trigger.message is not None and payload != trigger.message:
                    log.debug("%s = %r is not the trigger's %r", topic, payload[:40],
                              trigger.message)
                    continue
                last = self._last.get(_key(trigger))
                if last is not None and now - last < trigger.min_interval:
                    log.info("Trigger %s = %s ignored: %.2f s after the last start of %s "
                             "(min_interval %g s guards against bounces)", topic, payload[:40],
                             now - last, trigger.scene, trigger.min_interval)
                    continue
                self._last[_key(trigger)] = now
                fired.append(trigger)
        for trigger in fired:
            log.info("Trigger %s = %s: starting %s", topic, payload[:40], trigger.scene)
            self._start(trigger)
