"""What happened when a scene ran: deliveries, feedback results and per-action records.

Shared by the MQTT layer, the player, the run history and the dashboard, so that
every part speaks of an outcome in the same words; `PlayerSnapshot` is what plays now,
as the player hands it to the dashboard, the retained state and the terminal.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any


class Delivery(str, Enum):
    """What became of one command or media cue."""

    SENT = "sent"  # handed to the broker (QoS 1: acknowledged later by PUBACK)
    SIMULATED = "simulated"  # simulation mode: logged, not sent
    NOT_SENT = "not sent"  # broker away at its moment: dropped, never sent late
    PLAYED = "played"  # media started
    STOPPED = "stopped"  # media `stop`
    FAILED = "failed"  # media missing or refused, or a publish error
    CANCELLED = "cancelled"  # the scene stopped before its moment

    @property
    def undelivered(self) -> bool:
        """It should have gone out and did not: a failure of the record."""
        return self in UNDELIVERED


class FeedbackStatus(str, Enum):
    OK = "OK"
    ERROR = "ERROR"
    TIMEOUT = "TIMEOUT"
    PENDING = "PENDING"
    NONE = "none"  # no feedback expected

    @property
    def failed(self) -> bool:
        """The device said no, or never answered."""
        return self in FAILED_FEEDBACK


# What makes a record a failure (ActionRecord.failed); the run history's JSON and SQL
# forms of the same test are built from these, in this order.
FAILED_FEEDBACK = (FeedbackStatus.ERROR, FeedbackStatus.TIMEOUT)
UNDELIVERED = (Delivery.FAILED, Delivery.NOT_SENT)


@dataclass(frozen=True)
class FeedbackResult:
    """A tracked command's confirmation, as the tracker hands it to its callback."""

    command_id: int
    topic: str
    message: str
    status: FeedbackStatus
    latency: float | None  # seconds from publish to feedback; None for TIMEOUT
    device: str | None = None  # the device that answered, when known


@dataclass
class ActionRecord:
    """The account of one action in one run: planned and actual time, delivery, feedback."""

    index: int
    round: int
    planned: float  # offset from the run's start, seconds
    topic: str
    message: str
    route: str
    label: str | None = None
    actual: float | None = None
    delivery: Delivery | None = None
    feedback: FeedbackStatus = FeedbackStatus.NONE
    feedback_latency: float | None = None
    error: str | None = None
    # Its row in the run history: given by the player when the record is first reported,
    # in that order, and never changed (-1: not reported yet). Not part of the JSON.
    seq: int = -1

    @property
    def undelivered(self) -> bool:
        return self.delivery is not None and self.delivery.undelivered

    @property
    def failed(self) -> bool:
        """Feedback ERROR or TIMEOUT, or a command that was not delivered."""
        return self.feedback.failed or self.undelivered

    @property
    def lateness(self) -> float | None:
        return None if self.actual is None else self.actual - self.planned

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        del d["seq"]
        d["lateness"] = self.lateness
        d["delivery"] = self.delivery.value if self.delivery else None
        d["feedback"] = self.feedback.value
        return d


class Outcome(str, Enum):
    RUNNING = "running"
    COMPLETED = "completed"  # every expected feedback confirmed
    FEEDBACK_FAILED = "feedback failed"  # ran to the end, some feedback ERROR/TIMEOUT
    STOPPED = "stopped"  # stopped early by a person or a command
    PANIC = "panic"
    ABORTED = "aborted"  # a `required` feedback failed
    SHUTDOWN = "shutdown"  # the service stopped mid-scene


@dataclass
class SceneRun:
    """One run of a scene, from its start to its end."""

    run_id: str
    scene_id: str
    scene_name: str
    trigger: str  # "manual", "show:<cron>", "trigger:<topic>", "cmd", "dashboard", ...
    started_at: float  # wall-clock epoch seconds
    duration: float
    ended_at: float | None = None
    outcome: Outcome = Outcome.RUNNING
    records: list[ActionRecord] = field(default_factory=list)

    @property
    def failures(self) -> list[ActionRecord]:
        return [r for r in self.records if r.failed]

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "scene": self.scene_id,
            "name": self.scene_name,
            "trigger": self.trigger,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration": self.duration,
            "outcome": self.outcome.value,
            "records": [r.to_json() for r in self.records],
        }


@dataclass(frozen=True)
class NextCue:
    """The first cue of a playing scene that has not fired yet."""

    at: float  # planned offset from the run's start, seconds
    due_in: float  # seconds from now ("in" in JSON)
    topic: str
    message: str
    label: str | None

    def to_json(self) -> dict[str, object]:
        return {"at": self.at, "in": self.due_in, "topic": self.topic,
                "message": self.message, "label": self.label}


@dataclass(frozen=True)
class PlayerSnapshot:
    """What plays now, taken at one moment; `records` are copies (empty when not asked for)."""

    scene: str
    name: str
    run_id: str
    started_at: float  # wall-clock epoch seconds of offset 0
    elapsed: float  # seconds since offset 0, over every round
    duration: float  # the run's whole length (every round)
    round: int  # from 0
    next_cue: NextCue | None
    records: tuple[ActionRecord, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "scene": self.scene,
            "name": self.name,
            "run_id": self.run_id,
            "started_at": self.started_at,
            "elapsed": self.elapsed,
            "duration": self.duration,
            "round": self.round,
            "next_cue": None if self.next_cue is None else self.next_cue.to_json(),
            "records": [r.to_json() for r in self.records],
        }


def player_state_json(snapshot: PlayerSnapshot | None) -> dict[str, object]:
    """The player's state as JSON; nothing playing is `{"scene": None}`."""
    return {"scene": None} if snapshot is None else snapshot.to_json()
