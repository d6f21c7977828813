"""The typed snapshots (broker health, player state) rendered at the edges: exact shapes.

The dashboard and the retained state are built from frozen dataclasses; these tests pin
the JSON they become, key by key, so a renamed field or a changed value cannot drift.
"""

from __future__ import annotations

from datetime import timezone
from types import SimpleNamespace
from typing import Any, cast

from runner.mqtt.client import BrokerHealth, MQTTClient
from runner.web.views import Room, status_view

HEALTH = BrokerHealth(connected=True, simulation=False, since=1_700_000_000.0, reconnects=2,
                      messages_in=7, messages_out=5, messages_dropped=1,
                      broker="127.0.0.1:1884", gave_up=False)


class _Player:
    def state(self, *, records: bool = True) -> Any:
        return {"scene": None}


def _room(health: BrokerHealth) -> Room:
    return cast(Room, SimpleNamespace(
        config=SimpleNamespace(room="room1"),
        client=SimpleNamespace(health=lambda: health),
        registry=SimpleNamespace(get_all_devices=dict),
        player=_Player(),
    ))


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
