"""MQTT topics and subscription filters as values (after aiomqtt's topic.py).

`TopicFilter("devices/+/status").matches("devices/esp32_01/status")` and
`Topic("room1/audio").matches("room1/#")` follow MQTT 3.1.1 section 4.7: `+` is one whole
level (an empty one too), `#` is the last level and everything below it, the parent
included (`a/#` matches `a`), and a filter starting with a wildcard matches no topic
starting with `$` (`$SYS/...`). Levels are split by `/` and may be empty (`a//b`, `/a`).
A filter is split once: matching a presence message is the hot path of a busy room
(paho's topic_matches_sub builds a trie on every call).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

SINGLE = "+"
MULTI = "#"


@dataclass(frozen=True)
class TopicFilter:
    """A subscription filter (validity is checked where it is read: checks.filter_problem)."""

    text: str
    levels: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _list: list[str] = field(init=False, repr=False, compare=False)
    _fixed: tuple[tuple[int, str], ...] = field(init=False, repr=False, compare=False)
    _multi: bool = field(init=False, repr=False, compare=False)
    _wild: bool = field(init=False, repr=False, compare=False)
    _lead: bool = field(init=False, repr=False, compare=False)
    _single: int | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        levels = tuple(self.text.split("/"))
        multi = levels[-1] == MULTI  # `#` is only valid last
        singles = [i for i, lv in enumerate(levels) if lv == SINGLE]
        fixed = tuple((i, lv) for i, lv in enumerate(levels) if lv not in (SINGLE, MULTI))
        object.__setattr__(self, "levels", levels)
        object.__setattr__(self, "_list", list(levels))
        object.__setattr__(self, "_fixed", fixed)
        object.__setattr__(self, "_multi", multi)
        object.__setattr__(self, "_wild", len(fixed) != len(levels))
        object.__setattr__(self, "_lead", levels[0] in (SINGLE, MULTI))
        # `devices/+/status`: the device id is one level, found by index.
        object.__setattr__(self, "_single",
                           singles[0] if len(singles) == 1 and not multi else None)

    def __str__(self) -> str:
        return self.text

    @property
    def has_wildcards(self) -> bool:
        return self._wild

    def matches(self, topic: str | Topic) -> bool:
        """Whether a message published on `topic` is delivered to this subscription."""
        return self.match(topic.levels if isinstance(topic, Topic) else topic.split("/"))

    def match(self, levels: Sequence[str]) -> bool:
        """`matches` for a topic already split into its levels (split once per message)."""
        if not self._wild:
            return (levels == self._list if isinstance(levels, list)
                    else tuple(levels) == self.levels)
        if self._multi:
            if len(levels) < len(self._list) - 1:
                return False
        elif len(levels) != len(self._list):
            return False
        if self._lead and levels[0].startswith("$"):
            return False  # a leading wildcard never matches $SYS-style topics
        return all(levels[i] == lv for i, lv in self._fixed)

    def wildcard_part(self, levels: Sequence[str]) -> str:
        """The part of the topic the wildcards matched: the device id of a status topic."""
        if self._single is not None:
            return levels[self._single]
        picked: list[str] = []
        for i, level in enumerate(self.levels):
            if level == SINGLE and i < len(levels):
                picked.append(levels[i])
            elif level == MULTI:
                picked.extend(levels[i:])
                break
        return "/".join(picked) or "/".join(levels)


@dataclass(frozen=True)
class Topic:
    """A topic a message is published on (no wildcards)."""

    text: str
    levels: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "levels", tuple(self.text.split("/")))

    def __str__(self) -> str:
        return self.text

    def matches(self, topic_filter: str | TopicFilter) -> bool:
        """Whether a subscription to `topic_filter` receives this topic."""
        if isinstance(topic_filter, str):
            topic_filter = TopicFilter(topic_filter)
        return topic_filter.match(self.levels)

    @property
    def first(self) -> str:
        """The first level: the room of `room1/light`."""
        return self.levels[0]

    @property
    def room_status(self) -> str:
        """Where the room's devices answer a command on this topic: `room1/status`."""
        return f"{self.first}/status"

    def ends_in(self, level: str) -> bool:
        """A topic below some parent whose last level is `level` (`room1/audio`, not `audio`)."""
        return len(self.levels) > 1 and self.levels[-1] == level

    def starts_in(self, level: str) -> bool:
        """A topic whose first level is `level`, with more below it (`runner/cmd`)."""
        return len(self.levels) > 1 and self.levels[0] == level
