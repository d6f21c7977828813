"""The typed snapshots (broker health, player state) rendered at the edges: exact shapes.

The dashboard and the retained state are built from frozen dataclasses; these tests pin
the JSON they become, key by key, so a renamed field or a changed value cannot drift.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timezone
from types import SimpleNamespace
from typing import Any, cast

from runner.mqtt.client import BrokerHealth, MQTTClient
from runner.records import (
    ActionRecord,
    Delivery,
    FeedbackStatus,
    NextCue,
    PlayerSnapshot,
    player_state_json,
)
from runner.web.views import Room, scene_view, status_view

HEALTH = BrokerHealth(connected=True, simulation=False, since=1_700_000_000.0, reconnects=2,
                      messages_in=7, messages_out=5, messages_dropped=1,
                      broker="127.0.0.1:1884", gave_up=False)


class _Player:
    def __init__(self, snapshot: PlayerSnapshot | None = None) -> None:
        self.snapshot = snapshot

    def state(self, *, records: bool = True) -> PlayerSnapshot | None:
        if self.snapshot is None or records:
            return self.snapshot
        return replace(self.snapshot, records=())


def _room(health: BrokerHealth = HEALTH, snapshot: PlayerSnapshot | None = None,
          scenes: dict[str, Any] | None = None) -> Room:
    return cast(Room, SimpleNamespace(
        config=SimpleNamespace(room="room1"),
        client=SimpleNamespace(health=lambda: health),
        registry=SimpleNamespace(get_all_devices=dict),
        player=_Player(snapshot),
        scenes=scenes or {},
    ))


def _rec(index: int, planned: float, **kw: Any) -> ActionRecord:
    return ActionRecord(index=index, round=1, planned=planned, topic=f"room1/t{index}",
                        message="ON", route="mqtt", **kw)


# Round 1 (the second) of an endless 10 s loop played from a file outside scenes_dir: the view
# has only the records. One of each cue state, an old round's record and an injected one.
SNAPSHOT = PlayerSnapshot(
    scene="loop", name="Loop", run_id="abc123", started_at=1_700_000_000.0, elapsed=13.5,
    duration=10.0, round=1,  # a loop without `rounds`: the run is one round long
    next_cue=NextCue(at=19.0, due_in=5.5, topic="room1/t6", message="ON", label="Last"),
    records=(
        replace(_rec(0, 0.0, actual=0.01, delivery=Delivery.SENT), round=0),  # other round
        _rec(0, 10.0, actual=10.01, delivery=Delivery.SENT, feedback=FeedbackStatus.OK,
             feedback_latency=0.02),
        _rec(1, 11.0, actual=11.0, delivery=Delivery.NOT_SENT),
        _rec(2, 12.0, actual=12.0, delivery=Delivery.SENT, feedback=FeedbackStatus.TIMEOUT),
        _rec(3, 13.0, actual=13.0, delivery=Delivery.SENT, feedback=FeedbackStatus.PENDING),
        _rec(4, 13.25, actual=13.25, delivery=Delivery.SIMULATED, label="Fog"),
        _rec(5, 14.0, delivery=Delivery.CANCELLED),
        _rec(6, 19.0, feedback=FeedbackStatus.NONE),
        _rec(-1, 13.4, actual=13.4, delivery=Delivery.FAILED),  # injected: not drawn
    ),
)


def test_broker_health_renders_the_status_broker_shape() -> None:
    status = status_view(_room(HEALTH), timezone.utc)
    assert status["broker"] == {
        "connected": True,
        "address": "127.0.0.1:1884",
        "since": "2023-11-14T22:13:20+00:00",
        "reconnects": 2,
        "messages_in": 7,
        "messages_out": 5,
    }
    assert status["playing"] is None and status["devices"] == {"online": 0, "total": 0}


def test_a_fresh_client_reports_typed_health() -> None:
    client = MQTTClient("127.0.0.1", 1, client_id="t")  # never connected: nothing dialled
    health = client.health()
    assert isinstance(health, BrokerHealth)
    assert (health.connected, health.simulation, health.reconnects, health.messages_in,
            health.messages_out, health.messages_dropped, health.broker, health.gave_up) == (
        False, False, 0, 0, 0, 0, "127.0.0.1:1", False)


def test_scene_view_of_a_known_snapshot() -> None:
    def cue(i: int, at: float, state: str, latency: float | None = None,
            label: str | None = None, feedback: str = "expect") -> dict[str, Any]:
        return {"index": i, "at": at, "topic": f"room1/t{i}", "message": "ON",
                "label": label, "feedback": feedback, "state": state, "latency": latency}

    view = scene_view(_room(snapshot=SNAPSHOT), timezone.utc)
    assert view == {
        "playing": True, "scene": "loop", "name": "Loop", "run_id": "abc123",
        "started_at": "2023-11-14T22:13:20+00:00", "elapsed": 3.5, "duration": 10.0,
        "round": 2, "rounds": 1,
        "next_cue": {"at": 19.0, "in": 5.5, "topic": "room1/t6", "message": "ON",
                     "label": "Last"},
        "cues": [
            cue(0, 0.0, "ok", 0.02), cue(1, 1.0, "failed", feedback="none"),
            cue(2, 2.0, "timeout"), cue(3, 3.0, "pending"),
            cue(4, 3.25, "no-feedback", label="Fog", feedback="none"),
            cue(5, 4.0, "cancelled", feedback="none"), cue(6, 9.0, "waiting", feedback="none"),
        ],
    }
    assert scene_view(_room(), timezone.utc) == {"playing": False, "scene": None, "cues": []}


def test_status_names_the_playing_scene() -> None:
    assert status_view(_room(snapshot=SNAPSHOT), timezone.utc)["playing"] == "loop"


def test_player_snapshot_renders_the_player_state_shape() -> None:
    st = player_state_json(replace(SNAPSHOT, records=SNAPSHOT.records[1:2]))
    assert list(st) == ["scene", "name", "run_id", "started_at", "elapsed", "duration",
                        "round", "next_cue", "records"]
    assert st["next_cue"] == {"at": 19.0, "in": 5.5, "topic": "room1/t6", "message": "ON",
                              "label": "Last"}
    assert st["records"] == [{
        "index": 0, "round": 1, "planned": 10.0, "topic": "room1/t0", "message": "ON",
        "route": "mqtt", "label": None, "actual": 10.01, "delivery": "sent",
        "feedback": "OK", "feedback_latency": 0.02, "error": None,
        "lateness": SNAPSHOT.records[1].lateness,
    }]
    assert player_state_json(None) == {"scene": None}
