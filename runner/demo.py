"""`runner demo`: the whole product on one machine without hardware.

The demo starts its own broker (amqtt) on a free loopback port and sends nothing to
any other: on a room's Pi, 127.0.0.1:1883 is the room's broker with real props behind
it. Only `--broker HOST:PORT` makes it use another broker (when that one answers).
Virtual devices serve every command topic of the example scenes, the room service
plays the demo scene in a loop, and the dashboard shows it all.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

import runner
from runner.embedded_broker import EmbeddedBroker
from runner.errors import RunnerError
from runner.media import SimulatedMedia
from runner.model import Action, BrokerConfig, Config, DashboardConfig
from runner.mqtt.tls import tls_context
from runner.records import ActionRecord, Delivery, FeedbackStatus, Outcome, SceneRun
from runner.scenefile import load_scenes
from runner.service import RoomService
from runner.simulate import DeviceFleet, devices_for_topics
from runner.web.app import create_app
from runner.web.server import DashboardServer

log = logging.getLogger("demo")

DEMO_SCENE = "demo"
DEMO_ROOM = "room1"
DEVICE_LATENCY = (0.05, 0.3)  # seconds a virtual device takes to answer
PROBE_TIMEOUT = 2.0  # seconds an existing broker has to answer CONNECT
ONLINE_TIMEOUT = 10.0
# Where a wrong dashboard token is sent to look for the right one.
LOGIN_HINT = "use the token `runner demo` printed in its terminal (the `token` line)"
RESTART_PAUSE = 3.0  # before the show starts again after it ended on its own
SAFE_STATE = (Action(0.0, "room1/steam", "OFF"),)


def demo_files() -> tuple[Path, Path]:
    """The example scenes and media folders: beside the package in a clone, inside it in a wheel."""
    package = Path(runner.__file__).resolve().parent
    candidates = [
        (package.parent / "scenes", package.parent / "media"),  # a clone, editable install
        (package / "example_scenes", package / "example_media"),  # an installed wheel
    ]
    for scenes, media in candidates:
        if (scenes / f"{DEMO_SCENE}.yaml").is_file():
            return scenes, media
    raise RunnerError(
        f"the demo scene {DEMO_SCENE}.yaml is in neither {candidates[0][0]} nor "
        f"{candidates[1][0]}: reinstall the package, or run `./dev demo` in a clone"
    )


def broker_answers(broker: BrokerConfig, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether an MQTT broker accepts a connection at `broker`'s address (CONNACK 0)."""
    answered = threading.Event()
    accepted: list[bool] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2,
                         client_id=f"runner_demo_probe_{secrets.token_hex(4)}")
    client.connect_timeout = timeout
    if broker.username:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls:
        client.tls_set_context(tls_context(broker.tls))

    def on_connect(_c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        accepted.append(not reason.is_failure)
        answered.set()

    client.on_connect = on_connect
    try:
        client.connect(broker.host, broker.port, keepalive=10)
        client.loop_start()
        answered.wait(timeout)
    except (OSError, ValueError):
        return False
    finally:
        client.disconnect()  # before loop_stop, which otherwise waits out a select()
        client.loop_stop()
    return bool(accepted and accepted[0])


def demo_config(broker: BrokerConfig, scenes_dir: Path, media_dir: Path, *,
                dashboard_port: int, token: str,
                devices: Mapping[str, tuple[str, ...]], history_file: Path) -> Config:
    """The room the demo runs: room1, the example scenes and media, the virtual devices."""
    return Config(
        room=DEMO_ROOM,
        broker=dataclasses.replace(broker, client_id="runner_demo", connect_retries=3,
                                   retry_delay=0.5),
        scenes_dir=scenes_dir,
        media_dir=media_dir,
        feedback_timeout=1.0,
        dashboard=DashboardConfig(bind="127.0.0.1", port=dashboard_port, token=token),
        safe_state=SAFE_STATE,
        devices=devices,
        history_file=history_file,
    )


def _command_topics(scenes_dir: Path, media_dir: Path) -> list[str]:
    scenes = load_scenes(scenes_dir, default_room=DEMO_ROOM, media_dir=media_dir)
    topics = {a.topic for s in scenes.values() for a in (*s.actions, *s.on_stop) if not a.is_media}
    topics |= {a.topic for a in SAFE_STATE}
    return sorted(topics)


class Demo:
    """Starts and stops the demo's parts in order, and tells the console what happens.

    `broker`: the one `--broker` asked for; None (the default) starts the embedded one.
    """

    def __init__(self, broker: BrokerConfig | None = None, *, dashboard_port: int = 8080,
                 out: TextIO = sys.stdout, restart_pause: float = RESTART_PAUSE) -> None:
        self.broker = broker
        self.dashboard_port = dashboard_port
        self.out = out
        self.restart_pause = restart_pause
        self.token = secrets.token_urlsafe(12)
        self.embedded: EmbeddedBroker | None = None
        self.fleet: DeviceFleet | None = None
        self.service: RoomService | None = None
        self.server: DashboardServer | None = None
        self._workdir = Path(tempfile.mkdtemp(prefix="runner-demo-"))
        self._restart: threading.Timer | None = None
        self._stopping = threading.Event()

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def start(self) -> None:
        """Everything up, the demo scene playing; RunnerError with a way out otherwise."""
        scenes_dir, media_dir = demo_files()
        broker = self._find_broker()
        topics = _command_topics(scenes_dir, media_dir)
        devices = devices_for_topics(topics)
        self.fleet = DeviceFleet.from_map(devices, broker.host, broker.port,
                                          latency=DEVICE_LATENCY, username=broker.username,
                                          password=broker.password, tls=broker.tls)
        self.fleet.start()
        if not self.fleet.wait_online(ONLINE_TIMEOUT):
            raise RunnerError(f"the virtual devices could not connect to the broker at "
                              f"{broker.host}:{broker.port}; try --broker with another broker")
        low, high = DEVICE_LATENCY
        self.say(f"  devices    {len(devices)} virtual ESP32s, answering OK after "
                 f"{low:g}-{high:g}s: {', '.join(devices)}")

        config = demo_config(broker, scenes_dir, media_dir, dashboard_port=self.dashboard_port,
                             token=self.token, devices=devices,
                             history_file=self._workdir / "history.sqlite3")
        self.service = RoomService(config)
        self.service.start()
        simulated = isinstance(self.service.media, SimulatedMedia)
        self.say("  media      simulated: libvlc is not installed, media cues are only logged"
                 if simulated else "  media      played here through libvlc")

        self.server = self._start_dashboard(self.service)
        self.say(f"  dashboard  {self.server.url}")
        self.say(f"  token      {self.token}   (log in on the page with it to press "
                 "Play, Stop or Panic)")

        self.service.player.add_record_listener(self._on_record)
        self.service.player.add_listener(self._on_run)
        scene = self.service.scenes[DEMO_SCENE]
        self.say(f'Playing "{scene.name}" ({DEMO_SCENE}) in a loop, a round every '
                 f"{scene.duration:g}s. Ctrl-C stops everything.")
        self._play()

    def stop(self) -> None:
        """Dashboard, then the service (safe state), then devices, then the broker."""
        self._stopping.set()
        if self._restart:
            self._restart.cancel()
        steps: list[tuple[str, Callable[[], None] | None]] = [
            ("the dashboard", self.server.stop if self.server else None),
            ("the room service", self.service.shutdown if self.service else None),
            ("the virtual devices", self.fleet.stop if self.fleet else None),
            ("the embedded broker", self.embedded.stop if self.embedded else None),
        ]
        for what, step in steps:
            if step is None:
                continue
            try:
                step()
            except Exception:  # the later parts must stop even when one fails
                log.exception("stopping %s failed", what)
        shutil.rmtree(self._workdir, ignore_errors=True)

    # --- parts ---------------------------------------------------------------------

    def _find_broker(self) -> BrokerConfig:
        """The broker asked for with --broker when it answers; else an embedded one."""
        self.say("runner demo: a room show with virtual devices, no hardware needed.")
        asked = self.broker
        if asked is not None and broker_answers(asked):
            self.say(f"  broker     the MQTT broker at {asked.host}:{asked.port} (--broker)")
            return asked
        self.embedded = EmbeddedBroker().start()
        self.say(f"demo broker: embedded on {self.embedded.address} (nothing is sent to a "
                 "room's broker; --broker to use one)")
        if asked is not None:
            self.say(f"  (nothing answered at {asked.host}:{asked.port}, the --broker asked for)")
        # amqtt leaves an MQTT 5 CONNECT unanswered: 3.1.1 at once, not after a timeout.
        return BrokerConfig(host=self.embedded.host, port=self.embedded.port, mqtt5=False)

    def _start_dashboard(self, service: RoomService) -> DashboardServer:
        app = create_app(service, login_hint=LOGIN_HINT)
        server = DashboardServer(app, "127.0.0.1", self.dashboard_port)
        try:
            server.start()
        except RunnerError:
            if self.dashboard_port == 0:
                raise
            # Port taken (another dashboard, another program): any free port will do.
            self.say(f"  (port {self.dashboard_port} is taken; the dashboard uses a free one)")
            server = DashboardServer(app, "127.0.0.1", 0)
            server.start()
        return server

    def _play(self) -> None:
        if self._stopping.is_set() or self.service is None:
            return
        if self.service.player.current_run is None:
            self.service.play(DEMO_SCENE, "demo")

    # --- what the console shows ------------------------------------------------------

    def _on_record(self, event: str, run: SceneRun, rec: ActionRecord) -> None:
        tracked = rec.route == "mqtt" and rec.feedback is not FeedbackStatus.NONE
        if event == "action" and tracked and rec.delivery is Delivery.SENT:
            return  # said when its feedback arrives
        what = f"{rec.topic} = {rec.message}"
        cue = f"{rec.label}: " if rec.label else ""
        result = rec.delivery.value if rec.delivery else ""
        if rec.feedback in (FeedbackStatus.OK, FeedbackStatus.ERROR):
            mark = "✅" if rec.feedback is FeedbackStatus.OK else "❌"
            result = f"{mark} {rec.feedback.value} in {rec.feedback_latency or 0:.3f}s"
        elif rec.feedback is FeedbackStatus.TIMEOUT:
            result = "⏰ no answer in time"
        self.say(f"  round {rec.round + 1}  +{rec.planned:7.3f}s  {cue}{what}  {result}")

    def _on_run(self, event: str, run: SceneRun) -> None:
        if event != "finished" or self._stopping.is_set():
            return
        if run.outcome in (Outcome.STOPPED, Outcome.PANIC):
            current = self.service.player.current_run if self.service else None
            if current is not None and current is not run:
                # Play while it ran (mode restart): the new run is already on.
                self.say(f"The show was started again from the top ({current.trigger}); "
                         "it plays on in a loop.")
                return
            self.say(f"The show was {run.outcome.value} from the dashboard or a command; "
                     "press Play there to start it again.")
            return
        if run.outcome is Outcome.SHUTDOWN:
            return
        self.say(f"The show ended ({run.outcome.value}); it starts again in "
                 f"{self.restart_pause:g}s.")
        self._restart = threading.Timer(self.restart_pause, self._play)
        self._restart.daemon = True
        self._restart.start()
