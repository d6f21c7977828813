"""`runner play SCENE`: plays one scene with live progress, then reports what happened."""

from __future__ import annotations

import argparse
import logging
import signal
import sqlite3
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TextIO

from runner.cli import EXIT_ERROR, EXIT_FEEDBACK_FAILED, EXIT_INTERRUPTED, EXIT_OK
from runner.commands._common import config_from_args
from runner.errors import RunnerError
from runner.history import RunHistory, default_path
from runner.media import MediaBackend, SimulatedMedia, open_backend
from runner.model import Config, Scene
from runner.mqtt.client import MQTTClient
from runner.mqtt.feedback import FeedbackTracker
from runner.mqtt.readiness import log_readiness
from runner.mqtt.stack import MqttStack, build_mqtt_stack, new_tracker
from runner.player import Player
from runner.records import ActionRecord, Delivery, Outcome, PlayerSnapshot, SceneRun
from runner.report import cue_line, feedback_line, status_line, table, write_json
from runner.scenefile import load_scene, resolve_scene_ref

log = logging.getLogger("player")

PROGRESS_INTERVAL = 0.1  # seconds between redraws of the live line on a terminal
PRESENCE_WAIT = 0.5  # seconds for retained device presence to arrive before the start
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SimulatedPublisher:
    """`--simulate`: every command is logged and reported SIMULATED; nothing connects."""

    def publish(self, topic: str, payload: str, qos: int = 1, retain: bool = False) -> Delivery:
        logging.getLogger("mqtt").info("SIMULATED %s = %s", topic, payload)
        return Delivery.SIMULATED


class Progress:
    """Cue lines as they fire; on a terminal also a live status line redrawn in place."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._tty = out.isatty()
        self._lock = threading.Lock()
        self._status = ""

    def on_record(self, event: str, _run: SceneRun, rec: ActionRecord) -> None:
        line = cue_line(rec) if event == "action" else feedback_line(rec)
        with self._lock:
            if self._tty:
                self._out.write("\r\x1b[K" + line + "\n" + self._status)
            else:
                self._out.write(line + "\n")
            self._out.flush()

    @property
    def live(self) -> bool:
        return self._tty

    def redraw(self, state: PlayerSnapshot | None) -> None:
        if state is None:
            return
        with self._lock:
            self._status = status_line(state)
            self._out.write("\r\x1b[K" + self._status)
            self._out.flush()

    def done(self) -> None:
        if self._tty:
            with self._lock:
                self._out.write("\r\x1b[K")
                self._out.flush()


def _load(args: argparse.Namespace) -> tuple[Config, Scene]:
    config = config_from_args(args)
    path = resolve_scene_ref(args.scene, config.scenes_dir)
    return config, load_scene(path, default_room=config.room, media_dir=config.media_dir)


def mqtt_for(config: Config, scene: Scene) -> MqttStack:
    """The room's MQTT stack as `runner serve` builds it, listening for this scene's feedback."""
    return build_mqtt_stack(config, {scene.id: scene})


def open_history(config: Config, simulate: bool) -> RunHistory | None:
    """The room's run history (the one `runner serve` writes) when a config file is in use.

    Not for `--simulate` (nothing reached the room) nor without a config (an ad-hoc play of
    a scene file). A history that cannot be written leaves the run unrecorded, with a line.
    """
    if simulate or config.source is None:
        return None
    path = default_path(config)
    try:
        return RunHistory(path)  # no pruning here: `runner serve` prunes its history
    except (sqlite3.Error, OSError) as e:
        log.warning("This run is not recorded: the run history %s cannot be written (%s); "
                    "play as the service's user (sudo -u runner runner play ...) or set "
                    "history_file in %s", path, e, config.source)
        return None


def record_into(history: RunHistory, player: Player) -> None:
    """Every run of `player` and its actions into `history`, as the service records them."""

    def on_event(event: str, run: SceneRun) -> None:
        if event == "started":
            history.record_start(run)
        elif event == "finished":
            history.record_end(run)

    def on_record(_event: str, run: SceneRun, rec: ActionRecord) -> None:
        history.record_action(run, rec)

    player.add_listener(on_event)
    player.add_record_listener(on_record)


def run(args: argparse.Namespace) -> int:
    config, scene = _load(args)

    media: MediaBackend = (SimulatedMedia(config.media_dir) if args.simulate
                           else open_backend(config.media_dir))
    client: MQTTClient | None = None
    tracker: FeedbackTracker
    if args.simulate:
        tracker = new_tracker(config)
    else:
        mqtt = mqtt_for(config, scene)
        client, tracker = mqtt.client, mqtt.tracker
        if client.connect():  # False: simulation mode, reconnecting in the background
            log_readiness(log, config, mqtt.registry, scene, wait=PRESENCE_WAIT)
    player = Player(client or SimulatedPublisher(), tracker, media, config)
    progress = Progress(sys.stdout)
    player.add_record_listener(progress.on_record)
    history = open_history(config, args.simulate)
    if history is not None:
        record_into(history, player)

    interrupted = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        interrupted.set()

    previous = {s: signal.signal(s, on_signal) for s in SIGNALS}
    scene_run = None
    try:
        scene_run = player.play(scene, trigger="cli")
        while not player.wait(PROGRESS_INTERVAL):
            if interrupted.is_set():
                log.warning("interrupted: stopping %s into its safe state", scene.id)
                player.stop(Outcome.STOPPED)
                break
            if progress.live:
                progress.redraw(player.state(records=False))
    finally:
        player.shutdown()  # stops a scene still running into its safe state
        if history is not None:
            history.close()  # after the player's last event: the run's end is written
        media.close()
        tracker.close()
        if client is not None:
            client.disconnect()
        for s, handler_before in previous.items():
            signal.signal(s, handler_before)
        progress.done()

    if scene_run is None:
        return EXIT_ERROR
    print(table(scene_run))
    if args.report:
        try:
            write_json(scene_run, Path(args.report))
        except RunnerError as e:
            print(f"runner play: {e}", file=sys.stderr)
            return EXIT_ERROR
    if interrupted.is_set():
        return EXIT_INTERRUPTED
    simulated = sum(r.delivery is Delivery.SIMULATED for r in scene_run.records)
    if simulated and not args.simulate:
        print(f"runner play: the broker {config.broker.host}:{config.broker.port} was not "
              f"reachable, so {simulated} command(s) were only simulated; start the broker "
              "or fix broker.host/port, then play again", file=sys.stderr)
        return EXIT_FEEDBACK_FAILED
    return EXIT_OK if scene_run.outcome is Outcome.COMPLETED else EXIT_FEEDBACK_FAILED
