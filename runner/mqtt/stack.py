"""The room's MQTT stack, built in one place: client, device registry, feedback tracker,
message handler, and the subscriptions they need.

`runner serve`, `runner play`, `runner devices` and the tests all build it here, so what
one of them listens to cannot drift from another (serve once missed the scenes'
`feedback_topic` overrides that play subscribed). What the callers differ in is said
explicitly: the client's settings (`ClientSetup`, kept apart from the running client)
and whether the stack listens for feedback at all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from runner.model import Config, Scene, TLSConfig
from runner.mqtt.client import CONNACK_TIMEOUT, RECONNECT_DELAY, MQTTClient
from runner.mqtt.feedback import FeedbackTracker
from runner.mqtt.handler import MessageHandler, Route, feedback_filters
from runner.mqtt.registry import DeviceRegistry

MAX_BACKOFF = 5.0  # seconds: the longest background reconnect delay without reconnect_delay


@dataclass(frozen=True)
class ClientSetup:
    """Everything an `MQTTClient` is made from; `make()` makes one that is not connected."""

    host: str
    port: int
    client_id: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: TLSConfig | None = None
    connect_retries: int = 5
    retry_delay: float = 2.0
    keepalive: int = 30
    presence_topic: str | None = None  # `online`/`offline` of the runner itself
    max_backoff: float = MAX_BACKOFF
    connack_timeout: float = CONNACK_TIMEOUT
    reconnect_delay: float | None = RECONNECT_DELAY
    fallback: bool = True  # False: a failed connect() just returns False (no simulation)
    mqtt5: bool = True

    @classmethod
    def from_config(cls, config: Config) -> ClientSetup:
        """The room's own connection, as `runner serve` and `runner play` make it."""
        b = config.broker
        return cls(b.host, b.port, config.client_id, username=b.username,
                   password=b.password, tls=b.tls, connect_retries=b.connect_retries,
                   retry_delay=b.retry_delay, keepalive=b.keepalive,
                   presence_topic=config.runner_status_topic,
                   reconnect_delay=b.reconnect_delay, mqtt5=b.mqtt5)

    @classmethod
    def for_a_look(cls, config: Config, client_id: str) -> ClientSetup:
        """A brief look at the broker beside the service (`runner devices`).

        Its own client id (borrowing the service's would push the service off the
        broker), one attempt, no simulation mode and no presence of its own.
        """
        return dataclasses.replace(cls.from_config(config), client_id=client_id,
                                   connect_retries=1, retry_delay=0.0,
                                   presence_topic=None, fallback=False)

    def make(self) -> MQTTClient:
        return MQTTClient(self.host, self.port, self.client_id, username=self.username,
                          password=self.password, tls=self.tls,
                          connect_retries=self.connect_retries, retry_delay=self.retry_delay,
                          keepalive=self.keepalive, presence_topic=self.presence_topic,
                          max_backoff=self.max_backoff, connack_timeout=self.connack_timeout,
                          reconnect_delay=self.reconnect_delay, fallback=self.fallback,
                          mqtt5=self.mqtt5)


def feedback_topics(scenes: Mapping[str, Scene], config: Config) -> tuple[str, ...]:
    """`+/status` plus every scene's `feedback_topic` overrides that it does not cover."""
    return _feedback_topics(scenes, config.status_topics)


def _feedback_topics(scenes: Mapping[str, Scene], status_topics: tuple[str, ...],
                     ) -> tuple[str, ...]:
    overrides = (t for scene in scenes.values() for t in scene.feedback_topics)
    return feedback_filters(overrides, status_topics=status_topics)


@dataclass(frozen=True, eq=False)
class MqttStack:
    """The parts wired together; `subscriptions` is every filter subscribed, in order.

    The client renews its subscriptions on every reconnect; a filter is subscribed once
    (subscribing again has the broker resend every retained `online`, and each device's
    "last seen" would jump).
    """

    client: MQTTClient
    registry: DeviceRegistry
    tracker: FeedbackTracker
    handler: MessageHandler
    status_topics: tuple[str, ...]  # fixed for the stack's life (a reload keeps them)
    listens_for_feedback: bool
    _subscribed: dict[str, None] = field(default_factory=dict, init=False, repr=False)

    @property
    def subscriptions(self) -> tuple[str, ...]:
        return tuple(self._subscribed)

    def add_route(self, topic_filter: str, callback: Route) -> None:
        """Also hand messages on `topic_filter` to `callback(topic, text)`; subscribed."""
        self.handler.add_route(topic_filter, callback)
        self.subscribe_new()

    def follow_scenes(self, scenes: Mapping[str, Scene]) -> None:
        """Listen for feedback on these scenes' topics from now on (a reload's scenes)."""
        if self.listens_for_feedback:
            self.handler.set_feedback_topics(_feedback_topics(scenes, self.status_topics))
            self.subscribe_new()

    def subscribe_new(self) -> None:
        """Subscribe every filter the handler needs that is not subscribed yet."""
        for topic_filter in self.handler.topic_filters():
            if topic_filter not in self._subscribed:
                self._subscribed[topic_filter] = None
                self.client.subscribe(topic_filter)

    def close(self) -> None:
        self.client.disconnect()
        self.tracker.close()


def new_tracker(config: Config) -> FeedbackTracker:
    """The feedback tracker for the room's commands (also alone, for `--simulate`)."""
    return FeedbackTracker(timeout=config.feedback_timeout, devices=config.devices)


def build_mqtt_stack(config: Config, scenes: Mapping[str, Scene], *,
                     client: ClientSetup | None = None, feedback: bool = True,
                     routes: Iterable[tuple[str, Route]] = ()) -> MqttStack:
    """The stack for `config`, subscribed to presence, the feedback of `scenes` and `routes`.

    `client`: the connection's settings (default: the room's, `ClientSetup.from_config`).
    `feedback=False`: presence only (and `routes`), no feedback topics (`runner devices`).
    Nothing connects here: `stack.client.connect()` does, with every subscription made.
    """
    registry = DeviceRegistry(keep=config.devices, max_other=config.devices_max_other)
    tracker = new_tracker(config)
    handler = MessageHandler(registry, tracker, status_topics=config.status_topics,
                             feedback_topics=feedback_topics(scenes, config) if feedback
                             else ())
    for topic_filter, callback in routes:
        handler.add_route(topic_filter, callback)
    mqtt_client = (client or ClientSetup.from_config(config)).make()
    mqtt_client.set_handlers(on_message=handler.handle_message)
    stack = MqttStack(mqtt_client, registry, tracker, handler, config.status_topics, feedback)
    stack.subscribe_new()
    return stack
