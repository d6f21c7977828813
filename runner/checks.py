"""Semantic checks beyond the schema: times, MQTT topics, media paths, and timeline warnings.

They read the loaded document defensively (values the schema rejected are skipped), so
one run reports schema and semantic problems together.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from runner.errors import Diagnostic, Severity
from runner.errors import OffsetError as OffsetError  # noqa: PLC0414 - re-exported
from runner.model import Route, is_stop_message
from runner.schema import did_you_mean
from runner.yamlload import Document, JsonPath

MAX_TOPIC_BYTES = 65535  # MQTT's UTF-8 string limit
# Past a day, offsets are mistakes (and beyond ~1e10 s no clock can schedule them);
# daily repeats are shows in runner.yaml, long loops are `loop:` with a short duration.
MAX_OFFSET = 24 * 3600

# MQTT 3.1.1 4.7.3: no NUL, and control characters should not be used (mosquitto refuses).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SECONDS = re.compile(r"^\d+(?:\.\d+)?$")
_CLOCK = re.compile(r"^(?:(\d+):)?(\d+):(\d\d)(\.\d+)?$")
_TIME_FORMS = 'write seconds (2.5) or "m:ss" / "h:mm:ss", e.g. "1:30" or "1:02:03.500"'


def parse_offset(value: Any) -> float:
    """Seconds from `12`, `2.5`, `"1:30"`, `"1:02:03.500"`; OffsetError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise OffsetError(f"{value!r} is not a time; {_TIME_FORMS}")
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise OffsetError(f"{value} is not a time; {_TIME_FORMS}")
        if value < 0:
            raise OffsetError(f"{value} is negative; times count from the scene start, "
                              "so 0 is the earliest")
        if value > MAX_OFFSET:  # compared before float(): a huge int would overflow it
            _within_a_day(math.inf, value)
        return float(value)
    text = value.strip()
    if text.startswith("-"):
        raise OffsetError(f"{value!r} is negative; times count from the scene start, "
                          "so 0 is the earliest")
    if _SECONDS.match(text):
        return _within_a_day(float(text), value)
    m = _CLOCK.match(text)
    if not m:
        raise OffsetError(f"{value!r} is not a time; {_TIME_FORMS}")
    hours, minutes, seconds, fraction = m.groups()
    if int(seconds) > 59:
        raise OffsetError(f"{value!r} is not a time: seconds go up to 59 "
                          f"(did you mean {_suggest_clock(hours, minutes, seconds, fraction)}?)")
    if hours is not None and int(minutes) > 59:
        raise OffsetError(f"{value!r} is not a time: in h:mm:ss the minutes go up to 59")
    total = int(minutes) * 60 + int(seconds) + float(fraction or 0)
    return _within_a_day(total + int(hours or 0) * 3600, value)


def _within_a_day(seconds: float, written: Any) -> float:
    """`seconds`, or OffsetError naming the time as `written` when it is past a day."""
    if seconds > MAX_OFFSET:
        raise OffsetError(f"{written!r} is more than a day ({format_offset(MAX_OFFSET)}); "
                          "a scene's times stay within 24 hours: for daily starts use "
                          "shows in runner.yaml, for a repeating scene loop: true")
    return seconds


def _suggest_clock(hours: str | None, minutes: str, seconds: str, fraction: str | None) -> str:
    total = int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds)
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    text = f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
    return f'"{text}{fraction or ""}"'


def format_offset(seconds: float, *, hours: bool = False) -> str:
    """`75.5` → `1:15.500`; hours appear when needed, or always with `hours`."""
    millis = round(seconds * 1000)
    h, rest = divmod(millis, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h}:{m:02d}:{s:02d}.{ms:03d}" if h or hours else f"{m}:{s:02d}.{ms:03d}"


def topic_problem(topic: str) -> str | None:
    """Why `topic` cannot be published to, or None when it can."""
    if topic == "":
        return "the topic is empty"
    if "+" in topic or "#" in topic:
        return (f"topic {topic!r} contains a wildcard ('+' or '#'); commands go to one "
                "exact topic such as room1/light")
    if control := _control_problem(topic):
        return f"the topic {control}"
    if len(topic.encode("utf-8")) > MAX_TOPIC_BYTES:
        return f"the topic is longer than MQTT allows ({MAX_TOPIC_BYTES} bytes)"
    return None


def _control_problem(text: str) -> str | None:
    # mosquitto drops the connection of a client that sends such a topic or filter.
    m = _CONTROL.search(text)
    return None if m is None else (
        f"contains the control character U+{ord(m.group()):04X} (character {m.start() + 1}), "
        "which brokers refuse; remove it")


def filter_problem(topic_filter: str) -> str | None:
    """Why `topic_filter` cannot be subscribed to ('+' and '#' only as whole levels, '#' last)."""
    if topic_filter == "":
        return "the topic filter is empty"
    if control := _control_problem(topic_filter):
        return f"the topic filter {control}"
    if len(topic_filter.encode("utf-8")) > MAX_TOPIC_BYTES:
        return f"the topic filter is longer than MQTT allows ({MAX_TOPIC_BYTES} bytes)"
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return f"in {topic_filter!r}, '#' must be a whole level and the last one (a/#)"
        if "+" in level and level != "+":
            return f"in {topic_filter!r}, '+' must be a whole level (a/+/b)"
    return None


def media_problem(name: str, media_dir: Path | None) -> str | None:
    """Why media file `name` cannot be played from `media_dir` (existence only with a dir)."""
    if is_stop_message(name):  # the player's own rule: `stop`, `STOP`, ` stop `
        return None
    if name.strip() == "":
        return "the media file name is empty (or write `stop` to stop the player)"
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or windows.is_absolute() or windows.drive:
        return (f"media path {name!r} is absolute; give a file name inside media_dir, "
                "e.g. bg.mp3")
    if ".." in posix.parts or ".." in windows.parts:
        return f"media path {name!r} leaves media_dir ('..'); give a file inside media_dir"
    if media_dir is None:
        return None
    base = media_dir.resolve()
    target = (base / name).resolve()
    if not target.is_relative_to(base):
        return f"media path {name!r} leads outside media_dir (a symbolic link?)"
    if not target.is_file():
        return f"media file {name!r} is not in {media_dir}; copy it there or fix the name"
    return None


def _items(doc: Document, key: str) -> list[tuple[JsonPath, dict[str, Any]]]:
    value = doc.value.get(key) if isinstance(doc.value, dict) else None
    if not isinstance(value, list):
        return []
    return [((key, i), item) for i, item in enumerate(value) if isinstance(item, dict)]


def check_actions(doc: Document, key: str, media_dir: Path | None) -> list[Diagnostic]:
    """Topic, media and retain checks of every action under `key` (actions, on_stop, safe_state)."""
    out: list[Diagnostic] = []
    for path, item in _items(doc, key):
        topic = item.get("topic")
        if isinstance(topic, str):
            problem = topic_problem(topic)
            if problem and topic:  # the schema already reports an empty topic
                out.append(doc.diagnostic((*path, "topic"), problem))
            route = Route.for_topic(topic)
            message = item.get("message")
            if route is not Route.MQTT and isinstance(message, (str, int, float)):
                text = doc.text((*path, "message")) or str(message)
                problem = media_problem(text, media_dir)
                if problem:
                    out.append(doc.diagnostic((*path, "message"), problem))
            if route is Route.MQTT and item.get("retain") is True:
                out.append(doc.diagnostic(
                    (*path, "retain"),
                    "retain: true on a command makes the broker re-send it whenever the "
                    "device reconnects (e.g. after a reboot); remove it unless that is wanted",
                    severity=Severity.WARNING))
            if route is Route.MQTT and "volume" in item:
                out.append(doc.diagnostic(
                    (*path, "volume"), "volume applies only to /audio and /video actions",
                    severity=Severity.WARNING))
        if key != "actions" and item.get("feedback") == "required":
            out.append(doc.diagnostic(
                (*path, "feedback"), "safe-state commands are sent without waiting for an "
                "answer, so feedback: required does nothing here; remove it",
                severity=Severity.WARNING))
        feedback_topic = item.get("feedback_topic")
        if isinstance(feedback_topic, str) and feedback_topic:
            problem = topic_problem(feedback_topic)
            if problem:
                out.append(doc.diagnostic((*path, "feedback_topic"), problem))
    return out


def _is_time_like(value: Any) -> bool:
    return isinstance(value, (int, float, str)) and not isinstance(value, bool)


def check_timeline(doc: Document) -> list[Diagnostic]:
    """`at` and `duration` readable; warnings for same-topic collisions and cues after the end."""
    out: list[Diagnostic] = []
    offsets: list[tuple[JsonPath, float, Any]] = []
    for path, item in _items(doc, "actions"):
        if not _is_time_like(item.get("at")):
            continue  # missing or of the wrong type: the schema reports it
        try:
            offsets.append((path, parse_offset(item["at"]), item.get("topic")))
        except OffsetError as e:
            out.append(doc.diagnostic((*path, "at"), str(e)))
    seen: dict[tuple[str, float], JsonPath] = {}
    for path, at, topic in offsets:
        if not isinstance(topic, str):
            continue
        first = seen.setdefault((topic, at), path)
        if first != path:
            line = doc.position(first).line
            out.append(doc.diagnostic(
                path, f"two actions on {topic!r} at the same moment ({format_offset(at)}; "
                f"the other is on line {line}): both are sent at once and the last "
                "one wins; move one of them or remove it", severity=Severity.WARNING))
    duration = doc.value.get("duration") if isinstance(doc.value, dict) else None
    loop = doc.value.get("loop") if isinstance(doc.value, dict) else None
    if loop is True or (isinstance(loop, int) and not isinstance(loop, bool) and loop > 1):
        out += _check_round(doc, duration, offsets)
    if _is_time_like(duration):
        try:
            end = parse_offset(duration)
        except OffsetError as e:
            out.append(doc.diagnostic(("duration",), str(e)))
        else:
            out.extend(
                doc.diagnostic((*path, "at"),
                               f"this action at {format_offset(at)} comes after the scene's "
                               f"duration ({format_offset(end)}), so it never plays",
                               severity=Severity.WARNING)
                for path, at, _ in offsets if at > end
            )
    return out


def _check_round(doc: Document, duration: Any,
                 offsets: list[tuple[JsonPath, float, Any]]) -> list[Diagnostic]:
    """A loop whose round lasts 0 s cannot repeat: the player plays it once."""
    try:
        length = (parse_offset(duration) if duration is not None
                  else max((at for _, at, _ in offsets), default=None))
    except OffsetError:
        return []  # reported with the duration
    if length != 0:
        return []
    return [doc.diagnostic(
        ("duration",) if duration is not None else ("loop",),
        "this scene loops, but one round lasts 0 s (its duration, or without one its last "
        "action's offset), so it plays once; set duration: to the length of one round",
        severity=Severity.WARNING)]


def check_devices(doc: Document, devices: Mapping[str, tuple[str, ...]]) -> list[Diagnostic]:
    """Warnings for MQTT commands on topics that no device in the config serves."""
    served = {t for topics in devices.values() for t in topics}
    out: list[Diagnostic] = []
    for key in ("actions", "on_stop"):
        for path, item in _items(doc, key):
            topic = item.get("topic")
            if isinstance(topic, str) and Route.for_topic(topic) is Route.MQTT \
                    and topic not in served:
                # Topics share their room prefix, so only a near-identical one is a hint.
                hint = did_you_mean(topic, served, cutoff=0.8)
                out.append(doc.diagnostic(
                    (*path, "topic"),
                    f"no device in the config's `devices` serves {topic!r}{hint}; add it to "
                    "a device's list or check the spelling", severity=Severity.WARNING))
    return out
