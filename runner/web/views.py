"""What the dashboard shows, as JSON: built from the room's state, times in the room's timezone.

The `Room` protocol lists exactly what the dashboard reads and calls on the room
service; every view here is a plain function of it, so the API endpoints, the
server-sent snapshot and the tests all see the same shapes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, tzinfo
from typing import Any, Protocol

from runner.clock import iso, system_timezone, timezone_for, timezone_name
from runner.errors import ShowError
from runner.model import Config, Scene, Show
from runner.mqtt.client import BrokerHealth
from runner.records import (
    ActionRecord,
    Delivery,
    FeedbackResult,
    FeedbackStatus,
    PlayerSnapshot,
    SceneRun,
)

log = logging.getLogger("dashboard")

FAILURES_SHOWN = 20
RUNS_SHOWN = 10
STAMPS_KEPT = 500


class DeviceView(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def online(self) -> bool: ...
    @property
    def last_seen(self) -> float: ...
    @property
    def since(self) -> float: ...


class ClientView(Protocol):
    def health(self) -> BrokerHealth: ...


class RegistryView(Protocol):
    def get_all_devices(self) -> Mapping[str, DeviceView]: ...


class TrackerView(Protocol):
    def recent_results(self, n: int = 50) -> Sequence[FeedbackResult]: ...


class PlayerView(Protocol):
    def state(self, *, records: bool = True) -> PlayerSnapshot | None: ...


class HistoryView(Protocol):
    def last_runs(self, n: int = 20, *,
                  records: bool = True) -> Sequence[Mapping[str, Any]]: ...


class Room(Protocol):
    """The part of `runner.service.RoomService` the dashboard uses (docs/interfaces.md)."""

    @property
    def config(self) -> Config: ...
    @property
    def client(self) -> ClientView: ...
    @property
    def registry(self) -> RegistryView: ...
    @property
    def tracker(self) -> TrackerView: ...
    @property
    def player(self) -> PlayerView: ...
    @property
    def history(self) -> HistoryView: ...
    @property
    def scenes(self) -> Mapping[str, Scene]: ...

    def next_shows(self) -> Sequence[tuple[Show, datetime | None]]: ...
    def play(self, scene_id: str, trigger: str) -> SceneRun | None: ...
    def stop(self) -> None: ...
    def panic(self) -> None: ...
    def add_change_listener(self, cb: Callable[[], None]) -> None: ...


def room_timezone(config: Config) -> tzinfo:
    """The config's `timezone`, else the system's (as the shows use it)."""
    try:
        return timezone_for(config)
    except ShowError:
        log.warning("Unknown timezone %r in the config; showing the system's time",
                    config.timezone)
    return system_timezone()


class FailureClock:
    """Remembers when each feedback failure was first seen (results carry no time)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._seen: OrderedDict[int, float] = OrderedDict()
        self._lock = threading.Lock()

    def stamp(self, results: Sequence[FeedbackResult]) -> dict[int, float]:
        now = self._clock()
        with self._lock:
            for r in results:
                self._seen.setdefault(r.command_id, now)
            while len(self._seen) > STAMPS_KEPT:
                self._seen.popitem(last=False)
            return {r.command_id: self._seen[r.command_id] for r in results}


def status_view(room: Room, tz: tzinfo) -> dict[str, Any]:
    health = room.client.health()
    devices = room.registry.get_all_devices()
    playing = room.player.state(records=False)  # only which scene: scene_view has the cues
    return {
        "room": room.config.room,
        "now": iso(time.time(), tz),
        "timezone": timezone_name(tz),
        "broker": {
            "connected": health.connected,
            "address": health.broker,
            "since": iso(health.since, tz),
            "reconnects": health.reconnects,
            "messages_in": health.messages_in,
            "messages_out": health.messages_out,
        },
        "playing": None if playing is None else playing.scene,
        "devices": {
            "online": sum(1 for d in devices.values() if d.online),
            "total": len(devices),
        },
    }


DEVICES_PAGE = 500  # /api/devices without `limit`: more than the registry keeps by default
DEVICES_PAGE_MAX = 1000


def devices_view(room: Room, tz: tzinfo, offset: int = 0,
                 limit: int = DEVICES_PAGE) -> dict[str, Any]:
    """One page of the devices by id: `offset` and `limit` (at most DEVICES_PAGE_MAX)."""
    everything = sorted(room.registry.get_all_devices().values(), key=lambda d: d.id)
    limit = max(0, min(limit, DEVICES_PAGE_MAX))
    offset = max(0, offset)
    devices = everything[offset:offset + limit]
    return {
        "total": len(everything),
        "offset": offset,
        "limit": limit,
        "devices": [
            {
                "id": d.id,
                "online": d.online,
                "state": "online" if d.online else "offline",
                "last_seen": iso(d.last_seen, tz),
                "since": iso(d.since, tz),
            }
            for d in devices
        ]
    }


# Sent with nothing tracked (media, `feedback: none`, simulation): "no-feedback", grey.
_FEEDBACK_STATES = {
    FeedbackStatus.OK: "ok",
    FeedbackStatus.ERROR: "error",
    FeedbackStatus.TIMEOUT: "timeout",
    FeedbackStatus.PENDING: "pending",
}


def _cue_state(record: ActionRecord | None) -> str:
    """One word per cue, which the page turns into a colour and a symbol."""
    if record is None or (record.delivery is None and record.actual is None):
        return "waiting"
    if record.undelivered:
        return "failed"
    if record.delivery is Delivery.CANCELLED:
        return "cancelled"
    return _FEEDBACK_STATES.get(record.feedback, "no-feedback")



def scene_view(room: Room, tz: tzinfo) -> dict[str, Any]:
    """The playing scene's current round: its cues with their state, the playhead, the next cue.

    `elapsed` and `duration` are within the round, so a looping scene's bar starts over;
    `round` counts from 1.
    """
    state = room.player.state()
    if state is None:
        return {"playing": False, "scene": None, "cues": []}
    scene = room.scenes.get(state.scene)
    rnd = state.round
    length = scene.duration if scene is not None else state.duration
    # index -1: an action injected outside the timeline; other rounds are not drawn
    records = {rec.index: rec for rec in state.records if rec.round == rnd and rec.index >= 0}
    cues: list[dict[str, Any]] = []
    if scene is not None:
        for i, action in enumerate(scene.actions):
            rec = records.get(i)
            cues.append({
                "index": i, "at": action.at, "topic": action.topic,
                "message": action.message, "label": action.label,
                "feedback": "none" if action.is_media else action.feedback.value,
                "state": _cue_state(rec),
                "latency": rec.feedback_latency if rec else None,
            })
    else:  # played from a file outside scenes_dir: the records are all there is
        for i, rec in sorted(records.items()):
            cues.append({
                "index": i, "at": rec.planned - rnd * length,
                "topic": rec.topic, "message": rec.message,
                "label": rec.label,
                "feedback": "none" if rec.feedback is FeedbackStatus.NONE else "expect",
                "state": _cue_state(rec),
                "latency": rec.feedback_latency,
            })
    return {
        "playing": True,
        "scene": state.scene,
        "name": state.name or (scene.name if scene else state.scene),
        "run_id": state.run_id,
        "started_at": iso(state.started_at, tz),
        "elapsed": round(max(0.0, state.elapsed - rnd * length), 3),
        "duration": length,
        "round": rnd + 1,
        "rounds": scene.rounds if scene is not None else 1,  # None: loops forever
        "next_cue": None if state.next_cue is None else state.next_cue.to_json(),
        "cues": cues,
    }


def failures_view(room: Room, tz: tzinfo, clock: FailureClock) -> dict[str, Any]:
    """Recent feedback errors and timeouts, newest first."""
    results = list(room.tracker.recent_results(50))
    stamps = clock.stamp(results)
    failed = [r for r in results if r.status.failed]
    failed.sort(key=lambda r: (stamps[r.command_id], r.command_id), reverse=True)
    return {
        "failures": [
            {
                "command_id": r.command_id,
                "topic": r.topic,
                "message": r.message,
                "status": r.status.value,
                "latency": r.latency,
                "device": r.device,
                "time": iso(stamps[r.command_id], tz),
            }
            for r in failed[:FAILURES_SHOWN]
        ]
    }


def _show_rule(show: Show) -> str:
    if show.cron:
        return f"cron {show.cron}"
    days = ",".join(show.days) if show.days else "daily"
    return f"{show.time} {days}"


def shows_view(room: Room, tz: tzinfo) -> dict[str, Any]:
    starts = list(room.next_shows())
    starts.sort(key=lambda s: (s[1] is None, s[1].timestamp() if s[1] else 0.0))
    return {
        "shows": [
            {
                "scene": show.scene,
                "rule": _show_rule(show),
                "next": when.astimezone(tz).isoformat(timespec="seconds") if when else None,
            }
            for show, when in starts
        ]
    }


def history_view(room: Room, tz: tzinfo) -> dict[str, Any]:
    """The last runs; per-action records are left to `runner history` to keep this small."""
    runs = []
    # Without the records: a scene that looped all day has thousands, rebuilt per snapshot.
    for run in room.history.last_runs(RUNS_SHOWN, records=False):
        item = {k: v for k, v in run.items() if k != "records"}
        for key in ("started_at", "ended_at"):
            if isinstance(item.get(key), (int, float)):
                item[key] = iso(item[key], tz)
        runs.append(item)
    return {"runs": runs}


def scenes_view(room: Room) -> dict[str, Any]:
    return {
        "scenes": [
            {"id": s.id, "name": s.name, "duration": s.duration, "mode": s.mode.value,
             "cues": len(s.actions)}
            for s in sorted(room.scenes.values(), key=lambda s: s.id)
        ]
    }


def snapshot(room: Room, tz: tzinfo, clock: FailureClock) -> dict[str, Any]:
    """Everything the page shows; a part that fails is reported and the rest still shown."""
    parts: dict[str, Callable[[], dict[str, Any]]] = {
        "status": lambda: status_view(room, tz),
        "devices": lambda: devices_view(room, tz),
        "scene": lambda: scene_view(room, tz),
        "failures": lambda: failures_view(room, tz, clock),
        "shows": lambda: shows_view(room, tz),
        "history": lambda: history_view(room, tz),
        "scenes": lambda: scenes_view(room),
    }
    out: dict[str, Any] = {}
    for name, build in parts.items():
        try:
            out[name] = build()
        except Exception:  # a broken part must not blank the whole dashboard
            log.exception("Dashboard could not read %s", name)
            out[name] = {"error": f"The dashboard could not read the {name}; see the log."}
    return out
