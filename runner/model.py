"""The validated show model: scenes, actions and the room config as frozen dataclasses.

Instances are built only from documents that passed schema and semantic validation
(see `runner.scenefile` and `runner.configfile`); nothing here parses YAML.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from types import MappingProxyType

from runner.topics import Topic

DEFAULT_KEEP_DAYS = 90.0  # history.keep_days when the config does not say


class Route(str, Enum):
    """Where an action goes: published over MQTT, or played locally."""

    MQTT = "mqtt"
    AUDIO = "audio"
    VIDEO = "video"

    @classmethod
    def for_topic(cls, topic: str) -> Route:
        """Topics ending /audio or /video play media locally; everything else is MQTT."""
        named = Topic(topic)
        if named.ends_in("audio"):
            return cls.AUDIO
        if named.ends_in("video"):
            return cls.VIDEO
        return cls.MQTT


class Mode(str, Enum):
    """What starting a scene does while it already runs."""

    SINGLE = "single"  # ignore the new start
    RESTART = "restart"  # stop the running one (safe state), start again
    QUEUE = "queue"  # start after the running one ends


class SafeStateAtStart(str, Enum):
    """When `runner serve` applies the safe state as it starts (`safe_state_at_start`)."""

    AFTER_CRASH = "after_crash"  # the history shows a run that never ended
    ALWAYS = "always"
    NEVER = "never"


class FeedbackPolicy(str, Enum):
    """Whether an action waits for an OK/ERROR from its device."""

    EXPECT = "expect"  # a timeout is logged
    NONE = "none"  # nothing expected
    REQUIRED = "required"  # a timeout or ERROR stops the scene into its safe state


STOP_MESSAGE = "stop"  # a media cue with this message stops the topic's player


def is_stop_message(message: str) -> bool:
    """A media cue's message that stops its player: `stop`, `STOP`, ` stop `."""
    return message.strip().lower() == STOP_MESSAGE


@dataclass(frozen=True)
class Action:
    """One cue: a message on a topic at an offset (seconds) from the scene start."""

    at: float
    topic: str
    message: str
    feedback: FeedbackPolicy = FeedbackPolicy.EXPECT
    qos: int = 1
    retain: bool = False
    volume: int | None = None
    feedback_topic: str | None = None
    label: str | None = None
    where: str = ""  # "file:line:col" of the action in its source, for messages

    @property
    def route(self) -> Route:
        return Route.for_topic(self.topic)

    @property
    def is_media(self) -> bool:
        return self.route is not Route.MQTT

    @property
    def is_stop(self) -> bool:
        """A media cue that stops its topic's player instead of playing a file."""
        return self.is_media and is_stop_message(self.message)


@dataclass(frozen=True)
class Scene:
    """A timeline of actions; `id` is the file name without `.yaml`."""

    id: str
    name: str
    room: str
    actions: tuple[Action, ...]  # sorted by `at`, stable for equal offsets
    duration: float  # explicit, or the last action's offset
    mode: Mode = Mode.SINGLE
    feedback_timeout: float | None = None  # None: the config's timeout
    rounds: int | None = 1  # how many times to play; None = loop forever
    on_stop: tuple[Action, ...] = ()
    source: Path | None = None

    @property
    def loops_forever(self) -> bool:
        return self.rounds is None

    @property
    def feedback_topics(self) -> tuple[str, ...]:
        """The `feedback_topic` overrides of its actions: each needs its own subscription."""
        return tuple(dict.fromkeys(a.feedback_topic for a in self.actions if a.feedback_topic))


@dataclass(frozen=True)
class TLSConfig:
    """TLS towards the broker: the CA is always verified, and so is the host name."""

    ca_file: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None


@dataclass(frozen=True)
class BrokerConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = ""  # "" means rpi_room_<room>
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: TLSConfig | None = None
    connect_retries: int = 5
    retry_delay: float = 2.0
    reconnect_delay: float = 0.1  # background retry period once the broker is lost
    keepalive: int = 30
    # False: MQTT 3.1.1 from the first CONNECT, for a broker known not to answer MQTT 5
    # (the demo's embedded amqtt); True: MQTT 5 first, 3.1.1 when the broker refuses it.
    mqtt5: bool = True


@dataclass(frozen=True)
class Show:
    """A daily start of a scene: a crontab line, or a time of day with weekdays."""

    scene: str
    cron: str | None = None  # standard crontab meaning: 0 and 7 are Sunday
    time: str | None = None  # "HH:MM"
    days: tuple[str, ...] = ()  # mon..sun; empty means every day
    require_devices: bool = False
    where: str = ""


@dataclass(frozen=True)
class Trigger:
    """An MQTT message that starts a scene."""

    topic: str
    scene: str
    message: str | None = None  # None: any payload
    min_interval: float = 2.0  # seconds between two starts (bouncing buttons)
    where: str = ""


@dataclass(frozen=True)
class DashboardConfig:
    bind: str = "127.0.0.1"
    port: int = 8080
    token: str | None = field(default=None, repr=False)
    enabled: bool = True
    public_reads: bool = False  # reads without the token from other hosts
    max_connections: int = 256  # open HTTP connections; more are closed at once
    header_timeout: float = 10.0  # seconds to send a whole request, or the connection closes


def _frozen_devices(d: Mapping[str, tuple[str, ...]]) -> Mapping[str, tuple[str, ...]]:
    return MappingProxyType(dict(d))


@dataclass(frozen=True)
class Config:
    """The room's `runner.yaml`, resolved: paths absolute, secrets substituted."""

    room: str
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    scenes_dir: Path = Path("scenes")
    media_dir: Path = Path("media")
    feedback_timeout: float = 1.0
    status_topics: tuple[str, ...] = ("devices/+/status",)
    devices_max_other: int = 200  # registry: devices seen beyond those in `devices`
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)
    shows: tuple[Show, ...] = ()
    triggers: tuple[Trigger, ...] = ()
    safe_state: tuple[Action, ...] = ()
    devices: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: _frozen_devices({})
    )
    timezone: str | None = None  # None: the system's
    history_file: Path | None = None  # None: history.sqlite3 beside the config
    history_keep_days: float | None = DEFAULT_KEEP_DAYS  # runs older are pruned; None: all kept
    safe_state_at_start: SafeStateAtStart = SafeStateAtStart.AFTER_CRASH
    source: Path | None = None

    @property
    def client_id(self) -> str:
        return self.broker.client_id or f"rpi_room_{self.room}"

    @property
    def runner_status_topic(self) -> str:
        return f"runner/{self.room}/status"

    @property
    def runner_state_topic(self) -> str:
        return f"runner/{self.room}/state"

    @property
    def runner_cmd_topic(self) -> str:
        return f"runner/{self.room}/cmd"

    def devices_needed(self, scene: Scene) -> list[str]:
        """The devices (from `devices`) that serve the scene's MQTT topics, in first-use order."""
        needed: dict[str, None] = {}
        for action in (*scene.actions, *scene.on_stop):
            if not action.is_media:
                device = self.device_for_topic(action.topic)
                if device is not None:
                    needed[device] = None
        return list(needed)

    def device_for_topic(self, topic: str) -> str | None:
        """The device that serves `topic`, from the `devices` map."""
        for device, topics in self.devices.items():
            if topic in topics:
                return device
        return None
