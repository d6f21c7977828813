"""runner/topics.py: MQTT topics and filters as values, matched by the MQTT 3.1.1 rules."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.client import topic_matches_sub

from runner.model import Route
from runner.topics import Topic, TopicFilter


@pytest.mark.parametrize(("topic_filter", "topic", "expected"), [
    # exact
    ("room1/light", "room1/light", True),
    ("room1/light", "room1/light/x", False),
    ("room1/light", "room1", False),
    ("room1/light", "Room1/light", False),  # levels are case-sensitive
    # `+`: exactly one whole level, an empty one too
    ("devices/+/status", "devices/esp32_01/status", True),
    ("devices/+/status", "devices//status", True),
    ("devices/+/status", "devices/a/b/status", False),
    ("devices/+/status", "devices/status", False),
    ("+", "room1", True),
    ("+", "room1/light", False),
    ("+/+", "/light", True),  # a leading `/` is an empty first level
    ("+", "", True),
    # `#`: the last level and everything below it, the parent included
    ("room1/#", "room1/light", True),
    ("room1/#", "room1/a/b/c", True),
    ("room1/#", "room1", True),
    ("room1/#", "room1/", True),
    ("room1/#", "room2/light", False),
    ("#", "room1/light", True),
    ("#", "/", True),
    ("+/#", "room1", True),
    ("room1/+/#", "room1", False),
    # empty levels are levels
    ("a//b", "a//b", True),
    ("a//b", "a/b", False),
    ("a/+/b", "a//b", True),
    ("/a", "/a", True),
    ("/a", "a", False),
    ("a/", "a/", True),
    ("a/", "a", False),
    # `$` topics: no wildcard at the first level reaches them; a named first level does
    ("#", "$SYS/broker/uptime", False),
    ("+/broker/uptime", "$SYS/broker/uptime", False),
    ("+/#", "$SYS/x", False),
    ("$SYS/#", "$SYS/broker/uptime", True),
    ("$SYS/+/uptime", "$SYS/broker/uptime", True),
    ("room1/+", "room1/$x", True),  # `$` only matters at the first level
    ("room1/#", "room1/$x", True),
])
def test_mqtt_matching_rules(topic_filter: str, topic: str, expected: bool) -> None:
    assert TopicFilter(topic_filter).matches(topic) is expected
    assert TopicFilter(topic_filter).matches(Topic(topic)) is expected
    assert Topic(topic).matches(topic_filter) is expected
    assert Topic(topic).matches(TopicFilter(topic_filter)) is expected
    assert topic_matches_sub(topic_filter, topic) is expected  # paho reads MQTT alike


def test_topics_and_filters_are_values() -> None:
    assert TopicFilter("a/+") == TopicFilter("a/+") and TopicFilter("a/+") != TopicFilter("a/#")
    assert len({Topic("room1/light"), Topic("room1/light"), Topic("room1/audio")}) == 2
    assert str(TopicFilter("devices/+/status")) == "devices/+/status"
    assert str(Topic("room1/light")) == "room1/light"
    assert Topic("a//b").levels == ("a", "", "b")
    assert TopicFilter("room1/#").has_wildcards and not TopicFilter("room1/x").has_wildcards
    with pytest.raises(AttributeError):
        Topic("a").text = "b"  # type: ignore[misc]


def test_topic_levels_named_by_the_project() -> None:
    assert Topic("room1/light").first == "room1"
    assert Topic("room1/light").room_status == "room1/status"
    assert Topic("room1").room_status == "room1/status"
    assert Topic("room1/door/audio").ends_in("audio")
    assert Topic("/audio").ends_in("audio")
    assert not Topic("audio").ends_in("audio")  # a topic of one level is no room's player
    assert not Topic("room1/audio/x").ends_in("audio")
    assert Topic("runner/cmd").starts_in("runner") and Topic("runner/").starts_in("runner")
    assert not Topic("runner").starts_in("runner")
    assert not Topic("room1/runner").starts_in("runner")
    assert [Route.for_topic(t) for t in ("room1/audio", "room1/video", "audio", "a/audio/b")
            ] == [Route.AUDIO, Route.VIDEO, Route.MQTT, Route.MQTT]


def test_device_id_from_wildcards() -> None:
    def device_id(topic_filter: str, topic: str) -> str:
        return TopicFilter(topic_filter).wildcard_part(topic.split("/"))

    assert device_id("devices/+/status", "devices/esp32_01/status") == "esp32_01"
    assert device_id("site/+/+/presence", "site/hall/esp9/presence") == "hall/esp9"
    assert device_id("things/#", "things/a/b") == "a/b"


LEVELS = st.sampled_from(["a", "b", "status", "devices", "", "$SYS", "+", "#"])


@settings(max_examples=500, deadline=None, derandomize=True)
@given(st.lists(LEVELS, min_size=1, max_size=4), st.lists(LEVELS, min_size=1, max_size=4))
def test_topic_filter_agrees_with_paho(filter_levels: list[str], topic_levels: list[str]) -> None:
    """Our pre-split matcher gives paho's answer for every valid filter and topic."""
    topic_filter = "/".join(filter_levels)
    topic = "/".join(t for t in topic_levels if t not in ("+", "#"))
    if "#" in filter_levels[:-1] or not topic:
        return  # not a valid filter / topic: never subscribed or delivered
    expected = topic_matches_sub(topic_filter, topic)
    assert TopicFilter(topic_filter).match(topic.split("/")) is expected
    assert TopicFilter(topic_filter).matches(topic) is expected
    assert Topic(topic).matches(topic_filter) is expected
